"""The dead-letter console's pages (the JSON API is in replay.urls)."""

from __future__ import annotations

from django.urls import path

from replay import views

urlpatterns = [
    path("dead-letters/", views.dead_letters_page, name="dead-letters"),
    path("dead-letters/<int:dead_letter_id>", views.dead_letter_page, name="dead-letter"),
    path(
        "dead-letters/<int:dead_letter_id>/replay",
        views.dead_letter_replay_post,
        name="dead-letter-replay",
    ),
    path(
        "dead-letters/<int:dead_letter_id>/close",
        views.dead_letter_close_post,
        name="dead-letter-close",
    ),
    path("replays/<uuid:replay_id>/decide", views.replay_decide_post, name="replay-decide"),
    path("replays/<uuid:replay_id>/confirm", views.replay_confirm_post, name="replay-confirm"),
]
