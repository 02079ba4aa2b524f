"""Batch sharding, merging, interruption and the torchrun environment (engine/batch.py,
engine/distributed.py). The end-to-end torchrun runs are in tests/cli/test_cli_batch_dist.py."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from realsr_cli.engine import api
from realsr_cli.engine import batch as engine_batch
from realsr_cli.engine import distributed as engine_dist
from realsr_cli.engine.batch import BatchSummary, Job
from realsr_cli.errors import DeviceError, UsageError
from tests.engine.test_runner import LocalNet, loaded


def _jobs(names: list[str], out: str = "out") -> list[Job]:
    return [Job(Path("in") / n, Path(out) / n) for n in names]


def _png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


# ---------------------------------------------------------------- sharding


def test_shard_is_round_robin_disjoint_and_complete():
    jobs = _jobs([f"{i}.png" for i in range(7)])
    shares = [engine_batch.shard(jobs, r, 3) for r in range(3)]
    assert shares[0] == [jobs[0], jobs[3], jobs[6]]
    assert shares[1] == [jobs[1], jobs[4]] and shares[2] == [jobs[2], jobs[5]]
    assert engine_batch.shard(jobs, 0, 1) == jobs
    assert engine_batch.shard(jobs[:1], 2, 3) == []  # more ranks than images: some idle
    with pytest.raises(UsageError):
        engine_batch.shard(jobs, 3, 3)


def test_jobs_writing_the_same_file_stay_on_one_rank_in_plan_order(tmp_path):
    src = tmp_path / "in"
    for i, name in enumerate(["a.jpg", "a.png", "b.png", "c.png"]):
        _png(src / name, i)
    # --format png: a.jpg and a.png both write out/a.png
    jobs = engine_batch.plan(src, tmp_path / "out", fmt="png")
    assert [j.dst.name for j in jobs] == ["a.png", "a.png", "b.png", "c.png"]
    shares = [engine_batch.shard(jobs, r, 2) for r in range(2)]
    assert shares[0] == [jobs[0], jobs[1], jobs[2]] and shares[1] == [jobs[3]]
    # --save-aux: a.jpg and a.png share the aux names a_depth.png / a_kernel_var.png
    jobs = engine_batch.plan(src, tmp_path / "out", aux_dir=tmp_path / "aux")
    shares = [engine_batch.shard(jobs, r, 2) for r in range(2)]
    assert shares[0] == [jobs[0], jobs[1], jobs[2]] and shares[1] == [jobs[3]]


def test_plan_digest_tells_different_trees_apart(tmp_path):
    src = tmp_path / "in"
    _png(src / "a.png", 0)
    _png(src / "b.png", 1)
    first = engine_batch.plan_digest(engine_batch.plan(src, tmp_path / "out"))
    assert first == engine_batch.plan_digest(engine_batch.plan(src, tmp_path / "out"))
    _png(src / "c.png", 2)
    assert first != engine_batch.plan_digest(engine_batch.plan(src, tmp_path / "out"))
    assert first != engine_batch.plan_digest(engine_batch.plan(src, tmp_path / "elsewhere"))


# ---------------------------------------------------------------- summaries


def _report(name: str) -> api.UpscaleReport:
    return api.UpscaleReport(
        input=str(Path("in") / name), output=str(Path("out") / name), model="m", arch="fake", scale=2.0,
        input_size=(8, 6), output_size=(16, 12), tile=0, tiles=1, precision="fp32", seed=None, seconds=0.5,
    )


def test_merge_sums_counts_and_keeps_plan_order():
    jobs = _jobs(["a.png", "b.png", "c.png", "d.png", "e.png"])
    r0 = BatchSummary(total=3, done=1, skipped=1, failed=[("in/e.png", "bad")], reports=[_report("a.png")],
                      seconds=2.0, skipped_inputs=["in/c.png"], rank=0, host="n0", device="cuda:0")
    r1 = BatchSummary(total=2, done=2, reports=[_report("d.png"), _report("b.png")], seconds=3.5,
                      rank=1, host="n0", device="cuda:1", interrupted=True)
    merged = engine_batch.merge([r0, r1], jobs)
    assert (merged.total, merged.done, merged.skipped, merged.seconds) == (5, 3, 1, 3.5)
    assert merged.interrupted
    doc = merged.to_json()
    assert [r["input"] for r in doc["images"]] == ["in/a.png", "in/b.png", "in/d.png"]
    assert doc["inputs"] == {"done": ["in/a.png", "in/b.png", "in/d.png"], "skipped": ["in/c.png"],
                             "failed": ["in/e.png"]}
    assert doc["failed"] == [{"input": "in/e.png", "error": "bad"}]
    assert doc["world_size"] == 2
    assert [(r["rank"], r["device"], r["total"], r["done"], r["skipped"], r["failed"]) for r in doc["ranks"]] == [
        (0, "cuda:0", 3, 1, 1, 1), (1, "cuda:1", 2, 2, 0, 0)]
    assert doc["ranks"][1]["inputs"]["done"] == ["in/d.png", "in/b.png"] and doc["ranks"][1]["interrupted"]


def test_single_process_json_keeps_the_old_keys_and_adds_one_rank():
    s = BatchSummary(total=1, done=1, reports=[_report("a.png")], seconds=1.0, host="h", device="cpu")
    doc = s.to_json()
    assert list(doc)[:6] == ["total", "done", "skipped", "failed", "seconds", "images"]
    assert doc["world_size"] == 1 and doc["interrupted"] is False
    assert doc["ranks"] == [{"rank": 0, "host": "h", "device": "cpu", "total": 1, "done": 1, "skipped": 0,
                             "failed": 0, "seconds": 1.0, "interrupted": False,
                             "inputs": {"done": ["in/a.png"], "skipped": [], "failed": []}}]


def test_interrupt_stops_between_images_and_keeps_the_summary(tmp_path):
    src = tmp_path / "in"
    for i in range(3):
        _png(src / f"{i}.png", i)
    jobs = engine_batch.plan(src, tmp_path / "out")
    model = loaded(LocalNet(scale=2))

    def ctrl_c_on_second(job: Job) -> None:
        if job is jobs[1]:
            raise KeyboardInterrupt

    summary = engine_batch.run(model, jobs, api.UpscaleOptions(tile=0), on_start=ctrl_c_on_second,
                               stop_on_interrupt=True, rank=3)
    assert summary.interrupted and (summary.done, summary.total, summary.rank) == (1, 3, 3)
    assert summary.device == "cpu" and summary.host == socket.gethostname()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png"]  # nothing half-written
    with pytest.raises(KeyboardInterrupt):  # library default: the interrupt propagates
        engine_batch.run(model, jobs, api.UpscaleOptions(tile=0), on_start=ctrl_c_on_second)


def test_a_full_disk_stops_the_batch_at_the_first_enospc(tmp_path, monkeypatch):
    """Issue 18 (6): a batch into a full disk computed every image only to fail writing each."""
    import errno

    src = tmp_path / "in"
    for i in range(4):
        _png(src / f"{i}.png", i)
    jobs = engine_batch.plan(src, tmp_path / "out")
    model = loaded(LocalNet(scale=2))
    real_replace = os.replace
    calls = []

    def full_after_first(a, b):
        calls.append(b)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(a, b)

    monkeypatch.setattr(os, "replace", full_after_first)
    summary = engine_batch.run(model, jobs, api.UpscaleOptions(tile=0))
    assert summary.done == 1 and len(summary.failed) == 1 and len(calls) == 2  # images 3, 4 never ran
    assert "No space left" in summary.failed[0][1] or "space" in summary.failed[0][1]


def test_out_dir_is_checked_before_any_model_work(tmp_path, monkeypatch):
    from realsr_cli.errors import ImageIOError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ImageIOError, match="cannot write to the output folder") as info:
        engine_batch.check_out_dir(blocker / "out")  # its parent is a file: cannot be created
    assert info.value.exit_code == 4
    engine_batch.check_out_dir(tmp_path / "new" / "ok")  # probes, then leaves nothing behind
    assert not (tmp_path / "new").exists()
    (tmp_path / "ok").mkdir()
    engine_batch.check_out_dir(tmp_path / "ok")
    assert list((tmp_path / "ok").iterdir()) == []
    monkeypatch.setattr("shutil.disk_usage", lambda p: type("U", (), {"free": 1024})())
    with pytest.raises(ImageIOError, match="MiB free"):
        engine_batch.check_out_dir(tmp_path / "ok")


# ---------------------------------------------------------------- torchrun environment


def test_env_info_and_devices(monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert engine_dist.env_info() == engine_dist.DistInfo(0, 0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    info = engine_dist.env_info()
    assert (info.rank, info.local_rank, info.world_size, info.is_main, info.enabled) == (3, 1, 4, False, True)
    assert engine_dist.rank_device("cpu", info) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError):
            engine_dist.rank_device("cuda", info)
    elif torch.cuda.device_count() > 1:
        assert engine_dist.rank_device("cuda:0", info) == torch.device("cuda", 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(UsageError):
        engine_dist.env_info()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(UsageError):
        engine_dist.env_info()


def test_training_reads_the_same_environment():
    from realsr_cli.training import distributed as training_dist

    assert training_dist.DistInfo is engine_dist.DistInfo and training_dist.env_info is engine_dist.env_info


def test_single_process_is_a_no_op(monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    jobs = _jobs(["a.png", "b.png"])
    with engine_dist.process_group("cpu") as (info, device):
        assert not info.enabled and device.type == "cpu"
        assert not torch.distributed.is_initialized()
        assert engine_batch.share(jobs, info) == jobs
        part = BatchSummary(total=2, failed=[("in/b.png", "bad")])
        assert engine_batch.gather(part, jobs) is part
        assert engine_batch.outcome(part) == (1, False)


def test_world_size_without_torchrun_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(UsageError, match="MASTER_ADDR") as exc, engine_dist.process_group("cpu"):
        pass
    assert "torchrun" in exc.value.hint


def _worker(rank: int, port: int, root: str, queue) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    result: dict = {"rank": rank}
    with engine_dist.process_group("cpu") as (info, _):
        result["joined"] = torch.distributed.is_initialized()
        marker = Path(root) / "first.txt"
        with engine_dist.local_main_first(info):  # e.g. the one weights download per node
            if rank == 0:
                time.sleep(0.5)
                marker.write_text("local rank 0 was here")
            else:
                result["after_local_main"] = marker.exists()
        result["objects"] = engine_dist.all_gather_objects(rank * 10)
        result["gathered"] = engine_dist.gather_objects(f"r{rank}")
        part = BatchSummary(total=1, failed=[("in/x.png", "bad")] if rank == 1 else [], interrupted=rank == 0)
        result["outcome"] = engine_batch.outcome(part)
        # rank 1 sees a tree with one more image: both ranks must refuse to start
        names = ["a.png", "b.png"] + (["c.png"] if rank == 1 else [])
        try:
            engine_batch.share(_jobs(names, root), info)
        except UsageError as exc:
            result["error"] = exc.message
    result["left"] = not torch.distributed.is_initialized()
    queue.put(result)


def test_two_gloo_ranks_gather_and_refuse_different_plans(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_worker, args=(r, port, str(tmp_path), queue)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(10)
    assert [p.exitcode for p in procs] == [0, 0]
    results = sorted((queue.get() for _ in procs), key=lambda r: r["rank"])
    assert all(r["joined"] and r["left"] for r in results)
    assert [r["objects"] for r in results] == [[0, 10], [0, 10]]
    assert [r["gathered"] for r in results] == [["r0", "r1"], None]
    assert results[1]["after_local_main"]
    assert [r["outcome"] for r in results] == [(1, True), (1, True)]  # every rank exits with one code
    for r in results:
        assert "rank 0: 2, rank 1: 3" in r["error"]


def test_upscale_folder_is_the_batch_command_as_a_library_call(tmp_path):
    """Issue 14: the Python API does what `realsr batch` does (plan, out-dir check, load on this
    rank's device, run past a bad file, summary, exit code), with the caller's hooks."""
    import realsr_cli
    from realsr_cli.engine.folder import FolderEvents

    src = tmp_path / "in"
    src.mkdir()
    _png(src / "a.png", 1)
    _png(src / "b.png", 2)
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    seen: dict[str, list] = {"loaded": [], "done": [], "summary": []}

    class Events(FolderEvents):
        def loaded(self, model, rank, jobs, mine):
            seen["loaded"].append((rank.is_main, len(jobs), len(mine)))

        def done(self, job, report, error):
            seen["done"].append((job.src.name, error is None))

        def summary(self, summary):
            seen["summary"].append(summary.done)

    devices: list[str] = []

    def load(dev: str):
        devices.append(dev)
        return loaded(LocalNet())

    result = realsr_cli.upscale_folder(src, tmp_path / "out", load, api.UpscaleOptions(tile=0),
                                       device="cpu", events=Events())
    assert devices == ["cpu"] and seen["loaded"] == [(True, 3, 3)]
    assert sorted(seen["done"]) == [("a.png", True), ("b.png", True), ("bad.png", False)]
    assert result.exit_code == 6 and result.summary is not None and seen["summary"] == [2]
    assert result.summary.done == 2 and len(result.summary.failed) == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png"]
    again = realsr_cli.upscale_folder(src, tmp_path / "out", load, api.UpscaleOptions(tile=0),
                                      device="cpu", skip_existing=True)
    assert again.summary is not None and again.summary.skipped == 2 and again.exit_code == 6


@pytest.mark.parametrize(("sizes", "trims"), [([16] * 9, 0), ([16, 17, 18, 19, 20, 21, 22, 23, 24], 2)])
def test_heap_is_trimmed_every_few_new_image_sizes_only(tmp_path, monkeypatch, sizes, trims):
    """Issue 18: a mixed-size batch returns the heap's free pages every TRIM_EVERY new sizes (its
    memory stays flat); a same-size batch never pays for it."""
    calls = []
    monkeypatch.setattr(engine_batch.devices, "trim_cpu_heap", lambda: calls.append(1) or True)
    src = tmp_path / "in"
    for i, side in enumerate(sizes):
        src.mkdir(exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
            src / f"{i:02d}.png")
    jobs = engine_batch.plan(src, tmp_path / "out")
    summary = engine_batch.run(loaded(LocalNet()), jobs, api.UpscaleOptions(tile=0))
    assert summary.done == len(sizes) and len(calls) == trims  # 9 new sizes // TRIM_EVERY (4) = 2


def test_ranks_probing_a_new_out_dir_together_keep_it(tmp_path):
    """Issue 18 (found as a rare torchrun CI failure): with ``keep`` the probe leaves the folder it
    created, so a rank probing the same new OUT_DIR at the same moment cannot lose it."""
    engine_batch.check_out_dir(tmp_path / "new" / "out", keep=True)
    assert (tmp_path / "new" / "out").is_dir() and not any((tmp_path / "new" / "out").iterdir())
    engine_batch.check_out_dir(tmp_path / "other" / "out")
    assert not (tmp_path / "other").exists()  # a single process still leaves nothing behind
