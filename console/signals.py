"""Sign-ins, failed sign-ins and sign-outs go to the journal as they happen."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from console.selectors import LOGIN_FAILED
from console.services import journal_append


@receiver(user_logged_in)
def journal_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    journal_append(
        actor=user, action="login", subject=f"user:{user.get_username().lower()}", request=request
    )


@receiver(user_logged_out)
def journal_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        journal_append(
            actor=user,
            action="logout",
            subject=f"user:{user.get_username().lower()}",
            request=request,
        )


@receiver(user_login_failed)
def journal_login_failed(
    sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any
) -> None:
    # Django has already masked the password in `credentials`; only the username is kept.
    username = str(credentials.get("username", ""))[:150].lower()
    journal_append(actor=None, action=LOGIN_FAILED, subject=f"user:{username}", request=request)
