"""verify.py run as the auditor runs it: a bare `python3 -I -S` on a bundle, nothing else.

-I keeps the environment, the user's site-packages and the script's folder off the path;
-S drops site-packages altogether, so a pass proves verify.py needs the standard library only.
The log holds 40 entries; the bundle carries entries 10..29 (lines 1..20), the first
checkpoint of the range is at tree size 17 (inside the range), the last at 33 (after it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.tracing.ledger import bundlekit
from tests.tracing.ledger.bundlekit import OTHER_KEY, REAL_KEY

PYTHON3 = shutil.which("python3") or sys.executable
LOG_SIZE, BEGIN, END, FIRST, LAST = 40, 10, 30, 17, 33


def run_verify(
    bundle: Path, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """verify.py from an otherwise empty folder, as a bare system Python runs it."""
    alone = Path(cwd or bundle.parent) / "auditor"
    alone.mkdir(exist_ok=True)
    script = shutil.copy(bundlekit.VERIFY_PY, alone / "verify.py")
    return subprocess.run(
        [PYTHON3, "-I", "-S", str(script), str(bundle), *args],
        capture_output=True,
        text=True,
        cwd=alone,
        timeout=120,
        check=False,
    )


def bundle(entries: list[bytes] | None = None, **options: Any) -> dict[str, bytes]:
    settings: dict[str, Any] = {
        "begin": BEGIN,
        "end": END,
        "first_size": FIRST,
        "last_size": LAST,
    }
    settings.update(options)
    return bundlekit.bundle_files(entries or bundlekit.sample_entries(LOG_SIZE), **settings)


def failure(files: dict[str, bytes], tmp_path: Path, *args: str) -> str:
    """The one FAIL line verify.py prints for these files, checking it exits 1."""
    result = run_verify(bundlekit.write_zip(files, tmp_path / "bundle.zip"), *args)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.startswith("FAIL: ") and result.stdout.count("\n") == 1, result.stdout
    return result.stdout.strip()


def changed(files: dict[str, bytes], name: str, old: bytes, new: bytes) -> dict[str, bytes]:
    """One change to one file, the manifest resealed as a deliberate forger would."""
    assert old in files[name], (name, old)
    return bundlekit.seal({**files, name: files[name].replace(old, new, 1)})


def with_lines(files: dict[str, bytes], edit: Callable[[list[bytes]], object]) -> dict[str, bytes]:
    lines = files["entries.jsonl"].split(b"\n")[:-1]
    edit(lines)
    return bundlekit.seal({**files, "entries.jsonl": b"".join(x + b"\n" for x in lines)})


def ok_line(count: int = END - BEGIN, size: int = LOG_SIZE) -> str:
    root = bundlekit.b64(bundlekit.Tree(bundlekit.sample_entries(size)).root(size))
    return f"OK: {count} entries, tree size {size}, root {root}, signed by {REAL_KEY.fingerprint}\n"


# ---------------------------------------------------------------- a good bundle


def test_it_verifies_a_good_bundle_with_the_pinned_key(tmp_path: Path) -> None:
    zipped = bundlekit.write_zip(bundle(), tmp_path / "bundle.zip")

    result = run_verify(zipped, "--key", REAL_KEY.fingerprint)

    assert (result.returncode, result.stdout, result.stderr) == (0, ok_line(), "")


def test_it_verifies_the_unzipped_bundle_it_sits_in(tmp_path: Path) -> None:
    folder = bundlekit.write_dir(bundle(), tmp_path / "unzipped")

    result = subprocess.run(
        [PYTHON3, "-I", "-S", "verify.py", "--key", REAL_KEY.fingerprint.upper()[7:]],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=120,
        check=False,
    )

    assert (result.returncode, result.stdout) == (0, ok_line())


def test_without_a_key_it_says_it_proves_only_internal_consistency(tmp_path: Path) -> None:
    result = run_verify(bundlekit.write_zip(bundle(), tmp_path / "bundle.zip"))

    assert (result.returncode, result.stdout) == (0, ok_line())
    assert "WARNING: no --key given" in result.stderr
    assert "not who signed it" in result.stderr


def test_it_verifies_a_range_at_either_end_of_the_log(tmp_path: Path) -> None:
    for begin, end, first, last in ((0, 40, 1, 40), (0, 0, 40, 40), (39, 40, 40, 40)):
        files = bundle(begin=begin, end=end, first_size=first, last_size=last)
        result = run_verify(bundlekit.write_zip(files, tmp_path / "bundle.zip"))
        assert (result.returncode, result.stdout) == (0, ok_line(end - begin)), (begin, end)


def test_it_verifies_against_a_checkpoint_the_auditor_kept(tmp_path: Path) -> None:
    entries = bundlekit.sample_entries(LOG_SIZE)
    kept = REAL_KEY.checkpoint(12, bundlekit.Tree(entries).root(12))
    (tmp_path / "kept.txt").write_bytes(kept)
    zipped = bundlekit.write_zip(bundle(prior=kept, prior_size=12), tmp_path / "bundle.zip")

    result = run_verify(
        zipped, "--key", REAL_KEY.fingerprint, "--prior", str(tmp_path / "kept.txt")
    )

    assert (result.returncode, result.stdout) == (0, ok_line())


# ---------------------------------------------------------------- tampered entries


def test_a_changed_entry_is_named_by_its_lines(tmp_path: Path) -> None:
    files = bundle()
    line_3 = files["entries.jsonl"].split(b"\n")[2]
    forged = changed(files, "entries.jsonl", line_3, line_3.replace(b"ERP", b"ERQ"))

    assert failure(forged, tmp_path).startswith(
        "FAIL: entries.jsonl lines 1-7 (indexes 10-16) or range.json: together they do not "
        "rebuild the root of checkpoints/first.txt (tree size 17)"
    )


def test_a_changed_entry_after_the_last_checkpoint_in_range_is_named_by_its_lines(
    tmp_path: Path,
) -> None:
    files = bundle()
    forged = changed(files, "entries.jsonl", b'"msg-00000021"', b'"msg-00000099"')

    assert failure(forged, tmp_path).startswith(
        "FAIL: entries.jsonl lines 8-20 (indexes 17-29) or range.json: together they do not "
        "rebuild the root of checkpoint.txt (tree size 40)"
    )


def test_a_changed_byte_without_a_new_manifest_still_fails(tmp_path: Path) -> None:
    files = bundle()
    forged = {**files, "entries.jsonl": files["entries.jsonl"].replace(b"ORD-4713", b"ORD-4714", 1)}

    assert failure(forged, tmp_path).startswith("FAIL: entries.jsonl lines 1-7 (indexes 10-16)")


def test_an_entry_that_is_not_canonical_is_named_by_line_and_index(tmp_path: Path) -> None:
    files = bundle()
    forged = changed(
        files,
        "entries.jsonl",
        b'"kind":"record","message_id":"msg-00000012"',
        b'"kind":"record", "message_id":"msg-00000012"',
    )

    assert failure(forged, tmp_path) == (
        "FAIL: entries.jsonl line 3 (index 12): not in RFC 8785 canonical form "
        "(first difference at byte 326)"
    )


def test_an_entry_with_a_float_is_named(tmp_path: Path) -> None:
    forged = changed(bundle(), "entries.jsonl", b'"v":1}\n', b'"v":1.0}\n')

    assert failure(forged, tmp_path) == (
        "FAIL: entries.jsonl line 1 (index 10): number 1.0 is not an integer "
        "(entries carry no floats)"
    )


def test_a_removed_entry_is_named(tmp_path: Path) -> None:
    forged = with_lines(bundle(), lambda lines: lines.pop(4))

    assert failure(forged, tmp_path) == (
        "FAIL: entries.jsonl: holds 19 entries, range.json says indexes 10 to 29 (20): "
        "an entry was removed or added"
    )


def test_an_inserted_entry_is_named(tmp_path: Path) -> None:
    extra = bundlekit.canonical(bundlekit.sample_entry(999))
    forged = with_lines(bundle(), lambda lines: lines.insert(9, extra))

    assert "holds 21 entries" in failure(forged, tmp_path)


def test_two_swapped_entries_are_named_by_their_lines(tmp_path: Path) -> None:
    def swap(lines: list[bytes]) -> None:
        lines[8], lines[9] = lines[9], lines[8]

    assert failure(with_lines(bundle(), swap), tmp_path).startswith(
        "FAIL: entries.jsonl lines 8-20 (indexes 17-29) or range.json"
    )


# ---------------------------------------------------------------- tampered proofs and checkpoints


def test_a_changed_proof_hash_is_named(tmp_path: Path) -> None:
    files = bundle()
    right = bundlekit.Tree(bundlekit.sample_entries(LOG_SIZE)).range_proof(BEGIN, END, LOG_SIZE)[
        "right"
    ]
    first_hash = right[0].encode()
    forged = changed(
        files,
        "range.json",
        first_hash,
        first_hash[:5] + (b"A" if first_hash[5:6] != b"A" else b"B") + first_hash[6:],
    )

    assert failure(forged, tmp_path).startswith(
        "FAIL: entries.jsonl lines 8-20 (indexes 17-29) or range.json: together they do not "
        "rebuild the root of checkpoint.txt"
    )


def test_a_proof_hash_that_is_not_base64_is_named(tmp_path: Path) -> None:
    forged = changed(bundle(), "range.json", b'"right":["', b'"right":["*')

    assert failure(forged, tmp_path) == 'FAIL: range.json: "right"[0] is not standard base64'


@pytest.mark.parametrize(
    "name", ["checkpoint.txt", "checkpoints/first.txt", "prior/checkpoint.txt"]
)
def test_a_changed_checkpoint_is_named(tmp_path: Path, name: str) -> None:
    entries = bundlekit.sample_entries(LOG_SIZE)
    kept = REAL_KEY.checkpoint(12, bundlekit.Tree(entries).root(12))
    files = bundle(prior=kept, prior_size=12)
    size_line = files[name].split(b"\n")[1] + b"\n"
    forged = changed(
        files, name, b"\n" + size_line, b"\n" + str(int(size_line) - 1).encode() + b"\n"
    )

    assert failure(forged, tmp_path, "--key", REAL_KEY.fingerprint) == (
        f"FAIL: {name}: the signature by {REAL_KEY.name} (key id {REAL_KEY.key_id.hex()}) "
        "is not valid"
    )


def test_a_changed_signature_is_named(tmp_path: Path) -> None:
    files = bundle()
    signature_line = files["checkpoint.txt"].split(b"\n")[-2]
    flipped = (
        signature_line[:-3]
        + (b"A" if signature_line[-3:-2] != b"A" else b"B")
        + signature_line[-2:]
    )
    forged = changed(files, "checkpoint.txt", signature_line, flipped)

    assert failure(forged, tmp_path).startswith("FAIL: checkpoint.txt: the signature by")


def test_a_changed_public_key_is_named(tmp_path: Path) -> None:
    files = bundle()
    key = files["public-key.txt"]
    flipped = key[:-6] + (b"A" if key[-6:-5] != b"A" else b"B") + key[-5:]

    assert failure(changed(files, "public-key.txt", key, flipped), tmp_path).startswith(
        "FAIL: public-key.txt: key id"
    )


def test_a_changed_manifest_listed_file_is_named(tmp_path: Path) -> None:
    files = bundle()
    forged = {**files, "summary.html": files["summary.html"].replace(b"Test", b"Best")}

    assert failure(forged, tmp_path) == (
        "FAIL: summary.html: its SHA-256 differs from manifest.json: changed after export"
    )


def test_a_missing_checkpoint_is_named(tmp_path: Path) -> None:
    files = bundle()
    del files["checkpoints/last.txt"]

    assert failure(files, tmp_path) == ("FAIL: checkpoints/last.txt: missing from the bundle")


# ---------------------------------------------------------------- rewritten histories


def rewritten(entries: list[bytes]) -> list[bytes]:
    """The log after a superuser changed entry 12 and rebuilt the tree."""
    forged = bundlekit.sample_entry(12)
    forged["actor"] = "mallory"
    return [*entries[:12], bundlekit.canonical(forged), *entries[13:]]


def test_a_history_re_signed_with_another_key_fails_the_pinned_fingerprint(tmp_path: Path) -> None:
    forged = bundle(rewritten(bundlekit.sample_entries(LOG_SIZE)), signer=OTHER_KEY)

    assert failure(forged, tmp_path, "--key", REAL_KEY.fingerprint) == (
        f"FAIL: public-key.txt: the bundle is signed by {OTHER_KEY.fingerprint}, "
        f"not by the pinned key {REAL_KEY.fingerprint}"
    )
    # Without the pinned key, the forgery is consistent in itself: only --key tells them apart.
    unpinned = run_verify(tmp_path / "bundle.zip")
    assert unpinned.returncode == 0 and "WARNING: no --key given" in unpinned.stderr


def test_a_history_re_signed_with_the_real_key_fails_the_earlier_checkpoint(tmp_path: Path) -> None:
    original = bundlekit.sample_entries(LOG_SIZE)
    kept = REAL_KEY.checkpoint(20, bundlekit.Tree(original).root(20))
    forged = bundle(rewritten(original), prior=kept, prior_size=20)

    assert failure(forged, tmp_path, "--key", REAL_KEY.fingerprint) == (
        "FAIL: prior/checkpoint.txt: the log at tree size 20 did not grow into checkpoint.txt "
        "(tree size 40): the consistency proof fails, so the history was rewritten or the "
        "proof was changed"
    )


def test_a_rewritten_bundle_that_leaves_out_the_kept_checkpoint_fails(tmp_path: Path) -> None:
    original = bundlekit.sample_entries(LOG_SIZE)
    (tmp_path / "kept.txt").write_bytes(REAL_KEY.checkpoint(20, bundlekit.Tree(original).root(20)))
    forged = bundle(rewritten(original))

    assert failure(forged, tmp_path, "--prior", str(tmp_path / "kept.txt")).startswith(
        "FAIL: prior/checkpoint.txt: missing, but you brought"
    )


def test_a_changed_consistency_proof_is_named(tmp_path: Path) -> None:
    original = bundlekit.sample_entries(LOG_SIZE)
    kept = REAL_KEY.checkpoint(20, bundlekit.Tree(original).root(20))
    files = bundle(prior=kept, prior_size=20)
    proof = bundlekit.b64(bundlekit.Tree(original).consistency(20, LOG_SIZE)[0]).encode()
    forged = changed(files, "consistency.json", proof, bundlekit.b64(bytes(32)).encode())

    assert failure(forged, tmp_path).startswith(
        "FAIL: prior/checkpoint.txt: the log at tree size 20 did not grow into checkpoint.txt"
    )


def test_a_malformed_fingerprint_is_a_usage_error(tmp_path: Path) -> None:
    result = run_verify(bundlekit.write_zip(bundle(), tmp_path / "bundle.zip"), "--key", "abc")

    assert result.returncode == 2
    assert "expected SHA256:<64 hex digits>" in result.stderr
