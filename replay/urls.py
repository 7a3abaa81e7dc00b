from __future__ import annotations

from django.urls import path

from replay import api

urlpatterns = [
    path("api/v1/dead-letters", api.DeadLetterList.as_view(), name="api-dead-letters"),
    path(
        "api/v1/dead-letters/<int:dead_letter_id>",
        api.DeadLetterDetail.as_view(),
        name="api-dead-letter",
    ),
    path(
        "api/v1/dead-letters/<int:dead_letter_id>/replay",
        api.DeadLetterReplay.as_view(),
        name="api-dead-letter-replay",
    ),
    path(
        "api/v1/dead-letters/<int:dead_letter_id>/resolve",
        api.DeadLetterResolve.as_view(),
        name="api-dead-letter-resolve",
    ),
    path(
        "api/v1/dead-letters/<int:dead_letter_id>/discard",
        api.DeadLetterDiscard.as_view(),
        name="api-dead-letter-discard",
    ),
    path("api/v1/replays/<uuid:replay_id>", api.ReplayDetail.as_view(), name="api-replay"),
    path(
        "api/v1/replays/<uuid:replay_id>/approve",
        api.ReplayApprove.as_view(),
        name="api-replay-approve",
    ),
    path(
        "api/v1/replays/<uuid:replay_id>/reject",
        api.ReplayReject.as_view(),
        name="api-replay-reject",
    ),
    path(
        "api/v1/replays/<uuid:replay_id>/confirm-delivered",
        api.ReplayConfirmDelivered.as_view(),
        name="api-replay-confirm-delivered",
    ),
    path("api/v1/bulk-replays", api.BulkReplayList.as_view(), name="api-bulk-replays"),
    path(
        "api/v1/bulk-replays/<uuid:bulk_id>", api.BulkReplayDetail.as_view(), name="api-bulk-replay"
    ),
    *[
        path(
            f"api/v1/bulk-replays/<uuid:bulk_id>/{action}",
            api.bulk_control_view(action),
            name=f"api-bulk-replay-{action}",
        )
        for action in ("pause", "resume", "cancel", "approve", "reject")
    ],
]
