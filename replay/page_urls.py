"""The dead-letter console's and bulk replays' pages (the JSON API is in replay.urls)."""

from __future__ import annotations

from django.urls import path

from replay import views
from replay.views.bulk import CONTROLLED as BULK_CONTROLS

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
    path("bulk-replays/", views.bulk_replays_page, name="bulk-replays"),
    path("bulk-replays/new", views.bulk_replay_new, name="bulk-replay-new"),
    path("bulk-replays/<uuid:bulk_id>", views.bulk_replay_page, name="bulk-replay"),
    *[
        path(
            f"bulk-replays/<uuid:bulk_id>/{action}",
            views.bulk_replay_control_post,
            {"action": action},
            name=f"bulk-replay-{action}",
        )
        for action in BULK_CONTROLS
    ],
]
