"""pull / search / verify / rm against a hub served on 127.0.0.1 (HF_ENDPOINT)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pexpect
import pytest

from fakehub import FakeFile, FakeHub, FakeRepo
from localassist.errors import ModelNotAvailableError, UsageError
from localassist.models.catalog import lookup
from localassist.models.hub import RemoteFile, choose_files
from localassist.models.resolve import resolve_model
from localassist.settings import load_settings
from stderr_lines import only_our_lines

QWEN = "Qwen/Qwen2.5-0.5B-Instruct-GGUF"


def blob(n: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(n))


@pytest.fixture
def hub():
    fake = FakeHub().start()
    fake.add(
        FakeRepo(
            QWEN,
            [
                FakeFile("qwen2.5-0.5b-instruct-q4_k_m.gguf", blob(40_000, 1)),
                FakeFile("qwen2.5-0.5b-instruct-q8_0.gguf", blob(70_000, 2)),
            ],
            downloads=900,
            likes=40,
            parameters=494_000_000,
        )
    )
    fake.add(
        FakeRepo(
            "test/Multi-GGUF",
            [
                FakeFile("multi-Q5_K_M.gguf", blob(30_000, 3)),
                FakeFile("multi-IQ4_XS.gguf", blob(20_000, 4)),
            ],
            downloads=50,
        )
    )
    fake.add(
        FakeRepo(
            "test/Split-GGUF",
            [FakeFile(f"big-Q4_K_M-0000{i}-of-00003.gguf", blob(10_000 + i, 10 + i)) for i in (1, 2, 3)],
        )
    )
    fake.add(FakeRepo("test/Gated-GGUF", [FakeFile("g-Q4_K_M.gguf", b"x" * 100)], gated=True))
    yield fake
    fake.stop()


@pytest.fixture
def net(hub, cli):
    """Run the CLI with the hub at HF_ENDPOINT and the network allowed."""

    def run(*args: str, **env: str):
        return cli(*args, env={"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", **env})

    return run


def cache_root(repo: str) -> Path:
    return Path(os.environ["HF_HUB_CACHE"]) / ("models--" + repo.replace("/", "--"))


def test_pull_catalog_name_uses_the_catalog_quant(hub, net):
    result = net("pull", "qwen2.5:0.5b")
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.name == "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    assert path.read_bytes() == blob(40_000, 1)
    assert path.resolve().name == hub.repos[QWEN].files[0].sha256  # stored as its sha256 blob
    assert "Q4_K_M, the catalog default" in result.stderr
    assert (cache_root(QWEN) / "refs" / "main").read_text() == hub.repos[QWEN].commit
    assert not any("agent-harnesses" in p for p in hub.paths())  # no telemetry side-requests
    listed = json.loads(net("models", "--json").stdout)
    assert {m["name"] for m in listed} >= {"starter", "qwen2.5:0.5b"}


def test_quant_is_matched_case_insensitively_and_missing_ones_are_listed(net):
    ok = net("pull", "test/Multi-GGUF:iq4_xs")
    assert ok.returncode == 0, ok.stderr
    assert Path(ok.stdout.strip()).name == "multi-IQ4_XS.gguf"
    missing = net("pull", "test/Multi-GGUF:Q2_K")
    assert missing.returncode == 2
    assert "available quants: IQ4_XS, Q5_K_M" in missing.stderr


def test_split_gguf_downloads_every_part_and_resolves_to_the_first(hub, net):
    result = net("pull", "test/Split-GGUF")
    assert result.returncode == 0, result.stderr
    first = Path(result.stdout.strip())
    assert first.name == "big-Q4_K_M-00001-of-00003.gguf"
    parts = sorted(p.name for p in first.parent.glob("*.gguf"))
    assert parts == [f"big-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert resolve_model("test/Split-GGUF:Q4_K_M", load_settings()).path.name == first.name


def test_dropped_connection_is_resumed_with_a_range_request(hub, net):
    # huggingface_hub writes in 10 MB chunks: drop the connection after the first one
    data = bytes(range(256)) * 48_000  # 12.3 MB
    hub.add(FakeRepo("test/Drop-GGUF", [FakeFile("drop-Q4_K_M.gguf", data, drop_after=11_000_000)]))
    result = net("pull", "test/Drop-GGUF")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).read_bytes() == data
    ranges = [r for m, p, r in hub.requests if p.endswith("drop-Q4_K_M.gguf") and m == "GET"]
    assert ranges[0] is None and ranges[1] == "bytes=10485760-"


def test_ctrl_c_then_pull_again_resumes(hub, net, tmp_path):
    # huggingface_hub writes 10 MB chunks: serve the first 11 MB fast, then slowly
    big = tmp_path / "slow.gguf"
    big.write_bytes(bytes(range(256)) * 64_000)  # 16.4 MB
    hub.add(FakeRepo("test/Slow-GGUF", [FakeFile("slow-Q4_K_M.gguf", path=big, slow_after=11_000_000)]))
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "localassist", "pull", "test/Slow-GGUF"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    blobs = cache_root("test/Slow-GGUF") / "blobs"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        partial = list(blobs.glob("*.incomplete")) if blobs.exists() else []
        if partial and partial[0].stat().st_size >= 10_000_000:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert b"pull again to resume" in err or b"run the same pull again" in err
    kept = next(iter(blobs.glob("*.incomplete"))).stat().st_size
    assert 0 < kept < big.stat().st_size

    hub.repos["test/Slow-GGUF"].files[0].slow_after = None
    result = net("pull", "test/Slow-GGUF")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).read_bytes() == big.read_bytes()
    ranges = [r for m, p, r in hub.requests if p.endswith("slow-Q4_K_M.gguf") and r]
    assert ranges and int(ranges[-1].split("=")[1].rstrip("-")) >= kept
    assert not list(blobs.glob("*.incomplete"))


def test_corrupted_bytes_are_rejected_and_deleted(hub, net):
    hub.repos[QWEN].files[0].corrupt = True
    result = net("pull", "qwen2.5:0.5b")
    assert result.returncode == 6
    assert "does not match the hub's sha256" in result.stderr and "deleted" in result.stderr
    blobs = cache_root(QWEN) / "blobs"
    assert list(blobs.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["pull", "test/Gated-GGUF"], 7, "is gated"),
        (["pull", "nobody/Nothing-GGUF"], 3, "no repo nobody/Nothing-GGUF"),
        (["pull", "test/Multi-GGUF", "--file", "nope.gguf"], 2, "has no file 'nope.gguf'"),
        (["pull", "not a model"], 2, "neither a catalog name"),
        (["pull", "starter"], 2, "bundled"),
    ],
)
def test_hub_errors_are_one_line_with_a_code(net, args, code, fragment):
    result = net(*args)
    assert result.returncode == code, result.stderr
    assert fragment in result.stderr
    assert result.stderr.count("\n") <= 2 and "Traceback" not in result.stderr


def test_no_network_is_a_clear_error(cli):
    result = cli("pull", "qwen2.5:0.5b", env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"})
    assert result.returncode == 6
    assert "the connection to http://127.0.0.1:9 failed" in result.stderr


def test_offline_mode_in_the_environment_blocks_pull(net):
    result = net("pull", "qwen2.5:0.5b", HF_HUB_OFFLINE="1")
    assert result.returncode == 6 and "HF_HUB_OFFLINE=1" in result.stderr


def test_full_disk_is_reported_before_downloading(hub, net):
    huge = FakeFile("huge-Q4_K_M.gguf", b"x" * 10)
    huge._sha = "0" * 64
    hub.add(FakeRepo("test/Huge-GGUF", [huge]))
    type(huge).size = property(lambda self: 10**15 if self.name.startswith("huge") else len(self.read()))
    try:
        result = net("pull", "test/Huge-GGUF")
    finally:
        type(huge).size = property(lambda self: len(self.data) if self.data is not None else self.path.stat().st_size)
    assert result.returncode == 6
    assert "not enough disk space" in result.stderr
    assert not any(p.endswith("huge-Q4_K_M.gguf") and m == "GET" for m, p, _ in hub.requests)


def test_search_lists_gguf_repos_by_downloads(net):
    result = net("search", "gguf", "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert [r["repo"] for r in found][:2] == [QWEN, "test/Multi-GGUF"]
    assert found[0]["downloads"] == 900 and found[0]["likes"] == 40 and found[0]["parameters"] == 494_000_000
    table = net("search", "qwen").stdout
    assert QWEN in table and "494M" in table


def test_other_commands_never_touch_the_network(hub, net, model_env):
    assert net("pull", "test/Multi-GGUF:Q5_K_M").returncode == 0
    hub.requests.clear()
    for args in (
        ["models"],
        ["info", "test/Multi-GGUF:Q5_K_M"],
        ["verify"],
        ["config", "show"],
        ["ask", "--raw", "Hello", "-n", "2", "-T", "0", "-m", model_env["LOCALASSIST_MODEL"]],
    ):
        net(*args)
    assert hub.requests == []


def test_verify_and_pull_offline_rehash_without_network(hub, net):
    path = Path(net("pull", "qwen2.5:0.5b").stdout.strip())
    net("pull", "test/Multi-GGUF:Q5_K_M")
    hub.requests.clear()
    ok = net("verify")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count("ok") >= 3  # starter + two pulled files
    offline = net("pull", "qwen2.5:0.5b", "--offline")
    assert offline.returncode == 0 and "ok" in offline.stdout
    assert hub.requests == []
    blob_path = path.resolve()
    data = bytearray(blob_path.read_bytes())
    data[10] ^= 0xFF
    blob_path.write_bytes(bytes(data))
    bad = net("verify")
    assert bad.returncode == 6
    assert "MISMATCH" in bad.stdout and "do not match" in bad.stderr


def test_rm_whole_repo_and_single_quant(hub, net):
    net("pull", "qwen2.5:0.5b")
    net("pull", "qwen2.5:0.5b", "--file", "qwen2.5-0.5b-instruct-q8_0.gguf")
    removed = net("rm", "Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q8_0")
    assert removed.returncode == 0, removed.stderr
    root = cache_root(QWEN)
    assert len(list((root / "blobs").iterdir())) == 1
    assert [p.name for p in (root / "snapshots").rglob("*.gguf")] == ["qwen2.5-0.5b-instruct-q4_k_m.gguf"]
    assert net("rm", "qwen2.5:0.5b").returncode == 0
    assert not root.exists()
    again = net("rm", "qwen2.5:0.5b")
    assert again.returncode == 3


def test_rejected_token_on_pull_is_access_denied_naming_hf_token(hub, net):
    hub.tokens = {"hf_good"}
    refused = net("pull", "qwen2.5:0.5b", HF_TOKEN="hf_revoked")
    assert refused.returncode == 7, refused.stderr
    assert "HF_TOKEN" in refused.stderr and "401" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert not cache_root(QWEN).exists()
    accepted = net("pull", "qwen2.5:0.5b", HF_TOKEN="hf_good")  # the token did reach the hub
    assert accepted.returncode == 0, accepted.stderr


def test_concurrent_pulls_of_one_file_share_one_download(hub, tmp_path):
    data = bytes(range(256)) * 8_000  # 2 MB
    hold = threading.Event()  # the hub sends 64 KB of the file, then waits until both pulls are under way
    hub.add(FakeRepo("test/Both-GGUF", [FakeFile("both-Q4_K_M.gguf", data, hold=hold)]))
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
    cmd = [sys.executable, "-m", "localassist", "pull", "test/Both-GGUF"]
    errs = [tmp_path / "first.err", tmp_path / "second.err"]

    def file_gets() -> int:
        return sum(m == "GET" and p.endswith("both-Q4_K_M.gguf") for m, p, _ in hub.requests)

    def wait_for(condition, what: str) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    with errs[0].open("wb") as err0, errs[1].open("wb") as err1:
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err0, env=env)
        wait_for(lambda: file_gets() == 1, "the first pull's download")
        second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err1, env=env)
        # the second pull either waits for the first (and says so) or starts a download of its own
        wait_for(lambda: "waiting" in errs[1].read_text() or file_gets() == 2, "the second pull")
        hold.set()
        outs = [proc.communicate(timeout=60)[0].decode().strip() for proc in (first, second)]
    assert (first.returncode, second.returncode) == (0, 0), [e.read_text() for e in errs]
    assert "another download of both-Q4_K_M.gguf is running" in errs[1].read_text()
    assert file_gets() == 1  # the second found the file done: no second download
    assert outs[0] == outs[1]
    assert hashlib.sha256(Path(outs[0]).read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert not list((cache_root("test/Both-GGUF") / "blobs").glob("*.incomplete"))


def test_partial_larger_than_the_file_is_discarded_and_downloaded_again(hub, net):
    f = hub.repos[QWEN].files[0]
    request = urllib.request.Request(
        f"{hub.url}/{QWEN}/resolve/main/{f.name}", headers={"Range": f"bytes={f.size + 1000}-"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:  # the fake hub refuses it, as real servers do
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 416
    hub.requests.clear()
    blobs = cache_root(QWEN) / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{f.sha256}.incomplete").write_bytes(b"\0" * (f.size + 1000))  # e.g. left by an older file version
    result = net("pull", "qwen2.5:0.5b")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).read_bytes() == f.data
    assert [r for m, p, r in hub.requests if m == "GET" and p.endswith(f.name)] == [None]  # from the start
    assert not list(blobs.glob("*.incomplete"))


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


FILL_DISK_MIDWAY = r"""
set -u
mount -t tmpfs -o size=16m tmpfs "$HF_HUB_CACHE"
"$PY" -m localassist pull test/Full-GGUF >"$OUT/out1" 2>"$OUT/err1" &
pid=$!
for _ in $(seq 1200); do  # until the first 10 MB chunk is on disk
  part=$(ls "$HF_HUB_CACHE"/models--test--Full-GGUF/blobs/*.incomplete 2>/dev/null | head -1)
  [ -n "$part" ] && [ "$(stat -c %s "$part")" -ge 10000000 ] && break
  sleep 0.05
done
head -c 64M /dev/zero >"$HF_HUB_CACHE/filler" 2>/dev/null  # another program fills the disk
wait $pid; echo $? >"$OUT/rc1"
stat -c %s "$part" >"$OUT/kept"
rm "$HF_HUB_CACHE/filler"
"$PY" -m localassist pull test/Full-GGUF >"$OUT/out2" 2>"$OUT/err2"; echo $? >"$OUT/rc2"
sha256sum "$(cat "$OUT/out2")" | cut -d' ' -f1 >"$OUT/sha2"
"""


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rm` (user namespaces) to mount a small tmpfs")
def test_disk_filling_mid_download_keeps_the_partial_for_resuming(hub, tmp_path):
    # a real ENOSPC from the kernel: the HF cache is a 16 MB tmpfs, which passes the up-front
    # check for this 12.3 MB file, and fills up after the first 10 MB chunk was written
    data = bytes(range(256)) * 48_000
    hub.add(FakeRepo("test/Full-GGUF", [FakeFile("full-Q4_K_M.gguf", data, slow_after=11_000_000)]))
    out = tmp_path / "out"
    out.mkdir()
    Path(os.environ["HF_HUB_CACHE"]).mkdir(parents=True)
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "PY": sys.executable, "OUT": str(out)}
    subprocess.run(["unshare", "-rm", "bash", "-c", FILL_DISK_MIDWAY], env=env, timeout=300, check=True)
    first_err = (out / "err1").read_text()
    assert (out / "rc1").read_text().strip() == "6", first_err
    assert "disk filled up" in first_err and "free space and pull again" in first_err
    assert first_err.count("\n") == 2 and "Traceback" not in first_err  # the plan line, then the error
    kept = int((out / "kept").read_text())
    assert 10_000_000 <= kept < len(data)
    assert (out / "rc2").read_text().strip() == "0", (out / "err2").read_text()
    assert (out / "sha2").read_text().strip() == hashlib.sha256(data).hexdigest()
    ranges = [r for m, p, r in hub.requests if m == "GET" and p.endswith("full-Q4_K_M.gguf")]
    assert ranges == [None, f"bytes={kept}-"]  # the second pull resumed where the disk filled up


def verify_rows(stdout: str) -> dict[str, str]:
    """verify's table as {file name: status}."""
    rows = [line.split(None, 1) for line in stdout.splitlines()[1:]]
    return {Path(path).name: status for status, path in rows}


def test_verify_checks_every_part_of_a_split_model(hub, net):
    first = Path(net("pull", "test/Split-GGUF").stdout.strip())
    names = [f"big-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    third = first.with_name(names[2])
    blob = third.resolve()
    data = bytearray(blob.read_bytes())
    data[5] ^= 0xFF
    blob.write_bytes(bytes(data))
    bad = net("verify")
    assert bad.returncode == 6, bad.stderr
    rows = verify_rows(bad.stdout)
    assert [rows[n] for n in names] == ["ok", "ok", "MISMATCH"]
    offline = net("pull", "test/Split-GGUF", "--offline")
    assert offline.returncode == 6
    assert [verify_rows(offline.stdout)[n] for n in names] == ["ok", "ok", "MISMATCH"]
    first.with_name(names[1]).unlink()  # a part gone altogether
    missing = net("pull", "test/Split-GGUF", "--offline")
    assert missing.returncode == 6 and verify_rows(missing.stdout)[names[1]] == "MISSING"


def test_quant_pulled_at_an_older_commit_stays_listed_resolvable_and_verified(hub, net):
    q4 = Path(net("pull", "qwen2.5:0.5b").stdout.strip())
    hub.repos[QWEN].commit = "b" * 40  # the repo moved on upstream (a README edit is enough)
    q8 = Path(net("pull", f"{QWEN}:Q8_0").stdout.strip())
    assert (q4.parent.name, q8.parent.name) == ("a" * 40, "b" * 40)
    assert (cache_root(QWEN) / "refs" / "main").read_text() == "b" * 40
    listed = {m["name"] for m in json.loads(net("models", "--json").stdout)}
    assert {"qwen2.5:0.5b", f"{QWEN}:Q8_0"} <= listed
    assert resolve_model("qwen2.5:0.5b", load_settings()).path == q4
    assert resolve_model(f"{QWEN}:Q4_K_M", load_settings()).path == q4
    verified = net("verify")
    assert verified.returncode == 0, verified.stderr
    rows = verify_rows(verified.stdout)
    assert rows[q4.name] == "ok" and rows[q8.name] == "ok"
    removed = net("rm", "qwen2.5:0.5b")  # exactly that quant, though it is not in refs/main's snapshot
    assert removed.returncode == 0, removed.stderr
    assert not q4.exists() and q8.read_bytes() == blob(70_000, 2)
    assert net("rm", "qwen2.5:0.5b").returncode == 3


def test_rm_of_a_repo_quant_that_is_also_a_file_here_removes_nothing_and_says_why(
    hub, net, tmp_path, monkeypatch, starter_model
):
    # resolve_model takes a file at that path first; rm deletes only from the cache, so it
    # must refuse in one line (it crashed with an AttributeError traceback: found by mypy)
    net("pull", "qwen2.5:0.5b", "--file", "qwen2.5-0.5b-instruct-q8_0.gguf")
    monkeypatch.chdir(tmp_path)
    here = tmp_path / "Qwen" / "Qwen2.5-0.5B-Instruct-GGUF:Q8_0"
    here.parent.mkdir()
    shutil.copyfile(starter_model, here)
    result = net("rm", f"{QWEN}:Q8_0")
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"localassist: error: nothing removed: '{QWEN}:Q8_0' is a file here, not a model in the Hugging Face cache\n"
    )
    assert here.exists() and [p.name for p in cache_root(QWEN).rglob("*.gguf")] == ["qwen2.5-0.5b-instruct-q8_0.gguf"]


def test_rm_catalog_name_never_deletes_other_quants(hub, net):
    q8 = Path(net("pull", f"{QWEN}:Q8_0").stdout.strip())  # the catalog's qwen2.5:0.5b is the Q4_K_M
    result = net("rm", "qwen2.5:0.5b")
    assert result.returncode == 3
    assert "nothing removed" in result.stderr and result.stderr.count("\n") == 1
    assert q8.read_bytes() == blob(70_000, 2)
    assert resolve_model(f"{QWEN}:Q8_0", load_settings()).path == q8
    quant = net("rm", f"{QWEN}:Q4_K_M")
    assert quant.returncode == 3 and "nothing removed" in quant.stderr
    assert q8.is_file()


def test_rm_whole_repo_lists_what_goes_and_needs_yes_without_a_terminal(hub, net):
    net("pull", "qwen2.5:0.5b")
    net("pull", f"{QWEN}:Q8_0")
    blobs = sorted((cache_root(QWEN) / "blobs").iterdir())
    refused = net("rm", QWEN)  # stdin is not a terminal
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert "qwen2.5-0.5b-instruct-q4_k_m.gguf" in refused.stderr and "qwen2.5-0.5b-instruct-q8_0.gguf" in refused.stderr
    assert sorted((cache_root(QWEN) / "blobs").iterdir()) == blobs
    removed = net("rm", QWEN, "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "qwen2.5-0.5b-instruct-q8_0.gguf" in removed.stderr and "110.0 KB freed" in removed.stderr
    assert not cache_root(QWEN).exists()
    assert net("rm", QWEN, "-y").returncode == 3


def test_rm_whole_repo_asks_on_a_terminal_and_defaults_to_no(hub, net):
    net("pull", "qwen2.5:0.5b")
    root = cache_root(QWEN)

    def rm_answering(answer: str) -> pexpect.spawn:
        child = pexpect.spawn(
            sys.executable, ["-m", "localassist", "rm", QWEN], env=dict(os.environ), encoding="utf-8", timeout=60
        )
        child.expect(r"Remove all of Qwen/Qwen2\.5-0\.5B-Instruct-GGUF\? \[y/N\]")
        assert "qwen2.5-0.5b-instruct-q4_k_m.gguf" in child.before  # listed before the question
        child.sendline(answer)
        child.expect(pexpect.EOF)
        child.close()
        return child

    declined = rm_answering("")  # Enter: the default, No
    assert declined.exitstatus == 0 and "nothing removed" in declined.before
    assert (root / "blobs" / hub.repos[QWEN].files[0].sha256).is_file()
    accepted = rm_answering("y")
    assert accepted.exitstatus == 0 and "removed" in accepted.before
    assert not root.exists()


def test_pulled_real_gguf_runs(hub, net, starter_model):
    hub.add(FakeRepo("test/Starter-GGUF", [FakeFile("starter-Q4_K_M.gguf", path=starter_model)]))
    assert net("pull", "test/Starter-GGUF").returncode == 0
    result = net("ask", "-m", "test/Starter-GGUF:Q4_K_M", "--raw", "1, 2, 3,", "-T", "0", "-n", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


# --- quant choice, unit level


def remote(*names_sizes: tuple[str, int]) -> list[RemoteFile]:
    return [RemoteFile(name, size, "0" * 64) for name, size in names_sizes]


def test_best_fit_picks_the_best_quality_that_fits_memory():
    files = remote(("m-Q8_0.gguf", 8_000), ("m-Q5_K_M.gguf", 5_000), ("m-Q3_K_M.gguf", 3_000))
    plan = choose_files("o/m", "c", files, free_bytes=lambda: 7_000)
    assert plan.quant == "Q5_K_M" and "fits" in plan.reason
    plan = choose_files("o/m", "c", files, free_bytes=lambda: 100_000)
    assert plan.quant == "Q8_0"
    plan = choose_files("o/m", "c", files, free_bytes=lambda: 1_000)
    assert plan.quant == "Q3_K_M" and "may not fit" in plan.reason


def test_q4_k_m_is_the_default_without_a_catalog_entry():
    files = remote(("m-Q8_0.gguf", 8), ("m-Q4_K_M.gguf", 4))
    assert choose_files("o/m", "c", files).quant == "Q4_K_M"


def test_catalog_default_and_ambiguity():
    entry = lookup("qwen2.5:1.5b")
    files = remote(("qwen2.5-1.5b-instruct-q4_k_m.gguf", 4), ("qwen2.5-1.5b-instruct-q8_0.gguf", 8))
    assert choose_files(entry.repo, "c", files, entry=entry).files[0].path.endswith("q4_k_m.gguf")
    two = remote(("a-Q4_K_M.gguf", 4), ("b-Q4_K_M.gguf", 4))
    with pytest.raises(UsageError, match="several models"):
        choose_files("o/m", "c", two)
    with pytest.raises(ModelNotAvailableError):
        choose_files("o/m", "c", [])


def test_resumed_download_prints_no_huggingface_hub_lines(cli):
    hub = FakeHub().start()
    try:
        # huggingface_hub writes in 10 MB chunks and resumes from the last one written
        data = bytes(range(256)) * 48_000  # 12.3 MB
        hub.add(FakeRepo("test/Drop-GGUF", [FakeFile("drop-Q4_K_M.gguf", data, drop_after=11_000_000)]))
        hub.add(FakeRepo("test/Again-GGUF", [FakeFile("again-Q4_K_M.gguf", data, drop_after=11_000_000)]))
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
        result = cli("pull", "test/Drop-GGUF", env=env)
        assert result.returncode == 0, result.stderr
        assert Path(result.stdout.strip()).read_bytes() == data
        gets = [r for m, p, r in hub.requests if m == "GET" and p.endswith("drop-Q4_K_M.gguf")]
        assert len(gets) == 2  # the connection dropped and the download went on
        only_our_lines(result.stderr)  # not "Error while downloading ... Trying to resume download..."
        shown = cli("pull", "test/Again-GGUF", "-v", env=env)
        assert shown.returncode == 0, shown.stderr
        assert any(
            line.startswith("localassist: huggingface_hub: Error while downloading") and "Trying to resume" in line
            for line in only_our_lines(shown.stderr)
        )
    finally:
        hub.stop()
