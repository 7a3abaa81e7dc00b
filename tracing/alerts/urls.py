from __future__ import annotations

from django.urls import path

from tracing.alerts import views

urlpatterns = [
    path("alerts/", views.incidents_page, name="alerts"),
    path("alerts/incidents/<int:incident_id>", views.incident_page, name="alert-incident"),
    path(
        "alerts/incidents/<int:incident_id>/decide",
        views.incident_decide_post,
        name="alert-incident-decide",
    ),
    path(
        "alerts/incidents/<int:incident_id>/replay",
        views.incident_replay_post,
        name="alert-incident-replay",
    ),
    path("alerts/rules/", views.rules_page, name="alert-rules"),
    path("alerts/rules/new", views.rule_edit_page, name="alert-rule-new"),
    path("alerts/rules/<int:rule_id>", views.rule_edit_page, name="alert-rule-edit"),
    path("alerts/channels/", views.channels_page, name="alert-channels"),
    path("alerts/silences/", views.silences_page, name="alert-silences"),
    path("alerts/silences/new", views.silence_post, name="alert-silence-post"),
    path("alerts/history/", views.history_page, name="alert-history"),
]
