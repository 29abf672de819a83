"""The public surface is pinned: a rename or a lost export fails here."""

from __future__ import annotations

import subprocess
import sys

import comfywhip_nb
from comfywhip_nb import errors

EXPECTED = {
    "IceServer",
    "Prompt",
    "PromptError",
    "SessionInfo",
    "WHIPClient",
    "PublishError",
    "WhipError",
    "WhipServer",
    "load_prompt",
    "node",
    "register_nodes",
}


def test_all_matches_expected_public_names() -> None:
    assert set(comfywhip_nb.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(comfywhip_nb, name) is not None


def test_error_leaves_match_design_status_table() -> None:
    table = {
        "BadRequest": 400,
        "Unauthorized": 401,
        "NotFound": 404,
        "MethodNotAllowed": 405,
        "PreconditionFailed": 412,
        "PayloadTooLarge": 413,
        "UnsupportedMediaType": 415,
        "UnprocessableOffer": 422,
        "PreconditionRequired": 428,
        "TooManyRequests": 429,
        "TooManySessions": 503,
    }
    for name, status in table.items():
        leaf = getattr(errors, name)
        assert issubclass(leaf, errors.WhipError) and leaf.status == status
    assert len(set(table.values())) == len(table)
    assert errors.Unauthorized().headers["WWW-Authenticate"].startswith("Bearer")
    assert "Retry-After" in errors.TooManySessions(3).headers
    assert errors.MethodNotAllowed("PUT", ["POST", "GET"]).headers["Allow"] == "GET, POST"


def test_cli_help_for_every_command() -> None:
    for args in ([], ["serve"], ["publish"], ["demo"], ["bench"]):
        out = subprocess.run(
            [sys.executable, "-m", "comfywhip_nb", *args, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "usage: comfywhip" in out.stdout
