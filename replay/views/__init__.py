"""The dead-letter console's pages: the list, one dead letter and what an operator does with
it, and bulk replays. One module per page family; the URL conf imports them from here."""

from __future__ import annotations

from replay.views.bulk import (
    bulk_replay_control_post,
    bulk_replay_new,
    bulk_replay_page,
    bulk_replays_page,
)
from replay.views.dead_letter import dead_letter_page
from replay.views.dead_letters import dead_letters_page
from replay.views.replays import (
    dead_letter_close_post,
    dead_letter_replay_post,
    replay_confirm_post,
    replay_decide_post,
)

__all__ = [
    "bulk_replay_control_post",
    "bulk_replay_new",
    "bulk_replay_page",
    "bulk_replays_page",
    "dead_letter_close_post",
    "dead_letter_page",
    "dead_letter_replay_post",
    "dead_letters_page",
    "replay_confirm_post",
    "replay_decide_post",
]
