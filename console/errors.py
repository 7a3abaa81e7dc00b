"""Error pages that say what happened in words, never with a stack trace."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith(("/api/", "/ingest/", "/v1/"))


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "Bad request."}, status=400)
    return HttpResponse("<!doctype html><title>Bad request</title><h1>Bad request</h1>", status=400)


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": "Not allowed."}, status=403)
    return render(request, "403.html", {"reason": "You are not allowed to do this."}, status=403)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"detail": f"Nothing at {request.path}."}, status=404)
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    request_id = getattr(request, "request_id", "")
    if _wants_json(request):
        return JsonResponse(
            {"detail": "Tideline could not answer this request.", "request_id": request_id},
            status=500,
        )
    # No template context processors here: they may be what failed.
    return HttpResponse(
        f"<!doctype html><title>Error</title><h1>Something went wrong</h1>"
        f"<p>Tideline could not answer this request. It has been logged as {request_id}.</p>",
        status=500,
    )
