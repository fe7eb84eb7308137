from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("login/", views.SignInView.as_view(), name="login"),
    path("verify/", views.verify_code, name="verify"),
    path("enrol/", views.enrol, name="enrol"),
    path("step-up/", views.step_up, name="step_up"),
    path("password/", views.password_change, name="password_change"),
    path("passkeys/", views.passkeys, name="passkeys"),
    path("logout/", views.sign_out, name="logout"),
]
