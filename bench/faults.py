"""Faults during training, measured: the remote search server killed (SIGKILL) and restarted during a GRPO run.

Three runs of the same tiny GRPO training (same seed, same cold-started SmolLM2 policy, same shape), each
against its own `zerosearch serve` process on a loopback port, reached through the `http` engine (retries
with exponential back-off, SearchError after `retries`):

    unfaulted   nothing happens to the server
    restarts    a watcher kills the server 3 times with SIGKILL, each time after it has answered a fixed
                number of requests (k1 < k2 < k3, spread over the unfaulted run's request count, so each kill
                is followed by a search), and restarts it on the same port --pause seconds after the
                trainer's next connection met the dead port (see `Watcher`): the http engine's retries must
                cover every restart, so nothing is lost
    outage      the server is killed once (after k2 answered requests) and kept down until the trainer has
                given up on a search (longer than the whole retry window) and logged the step as skipped;
                then it is restarted: that step must be skipped (not trained on) and the run must go on

Per run the bench reads the run's metrics.jsonl (steps trained / skipped, `failed_searches`, the http
engine's `engine/retries` and `engine/errors` deltas, the skip reason), samples.jsonl (every trajectory of
every step: its queries, documents, response, reward) and the exported policy (final/model.safetensors:
sha256 and the largest parameter difference from the unfaulted run's). `restarts` must equal `unfaulted`
exactly (the served engine is BM25: deterministic); `outage` must equal it up to the skipped step.

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python bench/faults.py [--out runs/faults] [--steps 3]

Loopback only (the servers bind 127.0.0.1). Ends by itself: every wait has a timeout, every server is
killed in a `finally`. Resumable: each run lives in OUT/<run>/ and its figures in OUT/<run>/result.json; a
rerun skips finished runs and redoes an unfinished one from scratch. Prints one JSON line (also written to
OUT/faults.json). `--served-engine simulated` serves the answer-blind simulator instead (slow on CPU; its
draws restart with the server, so exact equality is not expected there).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

RUNS = ("unfaulted", "restarts", "outage")
VOLATILE = ("time_", "tokens_per_s", "engine/")  # wall-clock figures, and the engine's retry/latency counters


# --- the server ------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `zerosearch serve` process on a fixed loopback port, started again on the same port after a kill."""

    def __init__(self, serve_args: list[str], port: int, log_dir: Path, *, start_timeout: float = 120.0):
        self.serve_args, self.port, self.log_dir, self.start_timeout = list(serve_args), port, Path(log_dir), start_timeout
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._client = httpx.Client(timeout=2.0)

    def start(self) -> float:
        """Start the server and wait until /health answers; the seconds that took."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.log_dir / f"server-{self.starts}.log", "w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "zerosearch", "serve", *self.serve_args,
                                      "--host", "127.0.0.1", "--port", str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode} before answering /health; see "
                                   f"{self.log_dir / f'server-{self.starts}.log'}")
            if time.perf_counter() - t0 > self.start_timeout:
                self.kill()
                raise TimeoutError(f"the server did not answer /health within {self.start_timeout:.0f} s")
            try:
                if self._client.get(f"{self.url}/health").status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.05)

    def answered(self) -> int | None:
        """Search requests this server process has finished (its /metrics latency count); None if it is down."""
        try:
            return int(self._client.get(f"{self.url}/metrics").json()["latency_ms"]["count"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None

    def kill(self) -> None:
        """SIGKILL, no goodbye; waits (bounded) until the process is gone."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the server and nothing else
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=30)

    def close(self) -> None:
        self.kill()
        self._client.close()


class Watcher(threading.Thread):
    """Kills the server (SIGKILL) after it has answered `kill_after[i]` requests (counted over all its
    restarts) and restarts it on the same port.

    Restart mode (default): right after the kill the watcher holds the port with a bare socket until the
    trainer's next connection arrives, drops that connection without an answer (as a dying server would),
    closes the port (connections are refused from then on) and restarts the server `pause` seconds later.
    So every kill is met by the trainer's search (never healed silently while the policy generates) and
    the restart falls inside the http engine's retry window, whatever the step's timing.

    Outage mode (`until_skipped`: the run's metrics.jsonl): the port stays closed until the trainer has
    given up on a search and logged the step as skipped; then the server is restarted.

    Each fault is recorded in `faults`: the answered count it fired at, `down_s` (kill to /health answering
    again), `start_s` (process start to healthy) and, in restart mode, `client_wait_s` (the trainer's first
    attempt on the dead server to healthy)."""

    def __init__(self, server: Server, kill_after: list[int], *, pause: float = 1.0, until_skipped: Path | None = None,
                 settle: float = 0.3, poll: float = 0.05, down_timeout: float = 600.0):
        super().__init__(daemon=True)
        self.server, self.kill_after, self.pause, self.until_skipped = server, sorted(kill_after), pause, until_skipped
        self.settle, self.poll, self.down_timeout = settle, poll, down_timeout
        self.stop = threading.Event()
        self.faults: list[dict[str, Any]] = []
        self.error: str | None = None
        self.base = 0  # requests answered by the earlier server processes

    def run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # noqa: BLE001 - reported in the result, never swallowed silently
            self.error = f"{type(e).__name__}: {e}"

    def total(self) -> int | None:
        n = self.server.answered()
        return None if n is None else self.base + n

    def _loop(self) -> None:
        pending = list(self.kill_after)
        while pending and not self.stop.is_set():
            n = self.total()
            if n is None or n < pending[0]:
                self.stop.wait(self.poll)
                continue
            self.stop.wait(self.settle)  # the answer is on its way: let it reach the client first
            n = self.total() or n
            self.server.kill()
            t_kill = time.perf_counter()
            self.base = n
            fault: dict[str, Any] = {"after_requests": n, "threshold": pending.pop(0)}
            if self.until_skipped is not None:
                fault["skipped_step"] = self._wait_skipped(t_kill)
                t_hit = None
            else:
                t_hit = self._hold_port(t_kill)
                fault["client_came"] = t_hit is not None
                if t_hit is None:  # stopped, or nobody came within down_timeout: restart all the same
                    t_hit = time.perf_counter()
                time.sleep(self.pause)
            fault["start_s"] = round(self.server.start(), 3)
            now = time.perf_counter()
            fault["down_s"] = round(now - t_kill, 3)
            if t_hit is not None:
                fault["client_wait_s"] = round(now - t_hit, 3)
            self.faults.append(fault)

    def _hold_port(self, t_kill: float) -> float | None:
        """Listen on the dead server's port until the first connection; drop it unanswered and close the port.
        When that happened, or None (stopped, or nobody came within down_timeout)."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.server.port))
            s.listen(16)
            s.settimeout(0.1)
            while not self.stop.is_set() and time.perf_counter() - t_kill < self.down_timeout:
                try:
                    conn, _ = s.accept()
                except (socket.timeout, TimeoutError):
                    continue
                conn.close()
                return time.perf_counter()
        return None

    def _wait_skipped(self, t_kill: float) -> int | None:
        """The first step metrics.jsonl logs as skipped (the trainer gave up on a search), or None at the timeout."""
        while time.perf_counter() - t_kill < self.down_timeout and not self.stop.is_set():
            for row in _rows(self.until_skipped):
                if row.get("skipped"):
                    return int(row["step"])
            time.sleep(self.poll)
        return None


def _rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as written so far (a half-written last line is ignored)."""
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


# --- the training ------------------------------------------------------------------------------------------

def retry_window(retries: int, backoff: float) -> float:
    """Seconds the http engine sleeps between its attempts before it gives up (request_json)."""
    return sum(backoff * 2**i for i in range(retries))


def pick_policy() -> str:
    """The cached cold-start policy with the most SFT steps (zerosearch demo's), else the base model."""
    from zerosearch.io import cache_dir

    best, best_steps = "smollm2-135m-instruct", -1
    for final in sorted(Path(cache_dir("demo-warmup")).glob("*/final")):
        if not (final / "config.json").is_file():
            continue
        try:
            steps = int(json.loads((final.parent / "summary.json").read_text())["steps"])
        except (OSError, ValueError, KeyError):
            steps = 0
        if steps > best_steps:
            best, best_steps = str(final), steps
    return best


def train_config(a: argparse.Namespace, policy: str, world: Path, url: str) -> dict[str, Any]:
    """zerosearch.demo's GRPO settings (with its speed switches), scaled down, on the http engine."""
    n = a.questions * a.group
    return {
        "model": {"name": policy, "dtype": "float32"},
        "data": {"train": "world", "dev": None, "world_dir": str(world)},
        "engine": {"name": "http", "endpoint": [url], "k": a.k, "retries": a.retries, "backoff": a.backoff,
                   "timeout": a.timeout},
        "rollout": {"max_turns": a.turns, "max_new_tokens_per_turn": a.tokens, "max_obs_tokens": 256,
                    "max_prompt_tokens": 512, "max_total_tokens": 1024, "n": a.group, "batch_size": n},
        "algorithm": {"name": "grpo", "kl_loss_coef": 0.001},
        "optim": {"lr": 1e-5, "mini_batch_size": n, "micro_batch_size": n, "sort_by_length": True,
                  "reuse_sampler_logprobs": True, "reuse_kv_cache": True, "share_prompts": True,
                  "loss_token_logits": True},
        "train": {"steps": a.steps, "batch_size": a.questions, "seed": a.seed, "eval_every": 0, "save_every": 0,
                  "samples_per_step": n},  # every trajectory logged, so the runs can be compared row by row
    }


def child(config_path: str, run_dir: str) -> int:
    """One training run (a fresh process per run: nothing carried over between the runs)."""
    import torch

    torch.set_num_threads(1)
    from zerosearch.training.config import TrainConfig
    from zerosearch.training.monitors import TrainingHalted
    from zerosearch.training.trainer import train

    cfg = TrainConfig.model_validate(json.loads(Path(config_path).read_text()))
    status = {"finished": True, "halted": None}
    try:
        train(cfg, run_dir, progress=False)
    except TrainingHalted as e:
        status = {"finished": False, "halted": str(e)}
    Path(run_dir, "child.json").write_text(json.dumps(status))
    return 0


def run_training(name: str, cfg: dict[str, Any], out: Path, timeout: float) -> dict[str, Any]:
    run = out / name
    cfg_path = out / f"{name}.config.json"
    cfg_path.write_text(json.dumps(cfg, indent=1))
    t0 = time.perf_counter()
    with open(out / f"{name}.train.log", "w") as log:
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(cfg_path), str(run)], stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            rc = "timeout"
    wall = time.perf_counter() - t0
    status = json.loads((run / "child.json").read_text()) if (run / "child.json").is_file() else \
        {"finished": False, "halted": None}
    status["returncode"] = rc
    if rc != 0:
        status["error"] = (out / f"{name}.train.log").read_text(errors="replace")[-2000:]
    return {"wall_s": round(wall, 1), **status}


# --- the figures --------------------------------------------------------------------------------------------

def sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def summarize(run: Path) -> dict[str, Any]:
    rows = [r for r in _rows(run / "metrics.jsonl") if r.get("step", 0) > 0]
    trained = [r for r in rows if not r.get("skipped")]
    skipped = [r for r in rows if r.get("skipped")]
    return {
        "steps_logged": len(rows), "steps_trained": len(trained), "steps_skipped": [r["step"] for r in skipped],
        "skip_reasons": {str(r["step"]): r.get("skip_reason") for r in skipped},
        "halted": any(r.get("halted") for r in rows),
        "failed_searches_per_step": [r.get("failed_searches") for r in rows],
        "trained_steps_with_failed_searches": [r["step"] for r in trained if r.get("failed_searches")],
        "trained_steps_with_engine_errors": [r["step"] for r in trained if r.get("engine/errors")],
        "retries_per_step": [r.get("engine/retries", 0) for r in rows],
        "retries": sum(r.get("engine/retries", 0) for r in rows),
        "engine_errors": sum(r.get("engine/errors", 0) for r in rows),
        "searches_per_step": [r.get("engine/queries", 0) for r in rows],
        "reward_per_step": [r.get("reward") for r in rows],
        "pg_loss_per_step": [r.get("pg_loss") for r in rows],
        "policy_sha256": sha256(run / "final" / "model.safetensors"),
    }


def stable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith(VOLATILE)}


def compare(a: Path, b: Path, upto: int | None = None) -> dict[str, Any]:
    """Step-by-step metric and trajectory differences (volatile keys aside) and the weights' largest difference.
    `upto`: compare only the steps before it (an outage run after its skipped step trains on another policy)."""
    keep = (lambda r: r.get("step", 0) < upto) if upto is not None else (lambda r: True)
    ma = [stable(r) for r in _rows(a / "metrics.jsonl") if keep(r)]
    mb = [stable(r) for r in _rows(b / "metrics.jsonl") if keep(r)]
    metric_diffs = []
    for ra, rb in zip(ma, mb):
        for k in sorted(set(ra) | set(rb)):
            if ra.get(k) != rb.get(k):
                metric_diffs.append({"step": ra.get("step"), "key": k, "unfaulted": ra.get(k), "faulted": rb.get(k)})
    sa = [r for r in _rows(a / "samples.jsonl") if keep(r)]
    sb = [r for r in _rows(b / "samples.jsonl") if keep(r)]
    sample_diffs = [(x.get("step"), i) for i, (x, y) in enumerate(zip(sa, sb)) if x != y]
    out = {"steps_compared": len(ma), "metric_rows_equal": len(ma) == len(mb) and not metric_diffs,
           "metric_diffs": metric_diffs[:20], "trajectories_compared": len(sa),
           "trajectories_equal": len(sa) == len(sb) and not sample_diffs, "trajectory_diffs": sample_diffs[:20]}
    if upto is None:
        out["policy_sha256_equal"] = sha256(a / "final" / "model.safetensors") == sha256(b / "final" / "model.safetensors")
        out["policy_max_abs_diff"] = max_abs_diff(a / "final" / "model.safetensors", b / "final" / "model.safetensors")
    return out


def max_abs_diff(a: Path, b: Path) -> float | None:
    if not (a.is_file() and b.is_file()):
        return None
    from safetensors.torch import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    if set(ta) != set(tb):
        return float("inf")
    return max(float((ta[k].float() - tb[k].float()).abs().max()) if ta[k].numel() else 0.0 for k in ta)


# --- the bench ---------------------------------------------------------------------------------------------

def serve_args(a: argparse.Namespace, world: Path) -> list[str]:
    if a.served_engine == "bm25":
        return ["--engine", "bm25", "--corpus", str(world / "corpus.jsonl"), "--k", str(a.k)]
    return ["--engine", "simulated", "--answer-blind", "--sim-model", "smollm2-135m-instruct", "--sim-mode", "sft",
            "--k", str(a.k), "--doc-words", "20", "--max-new-tokens", "120", "--engine-seed", str(a.seed)]


def one_run(name: str, a: argparse.Namespace, out: Path, policy: str, world: Path,
            kill_after: list[int], until_skipped: bool) -> dict[str, Any]:
    """A run against its own fresh server (faults per `kill_after`), its figures saved to OUT/<name>/result.json."""
    run = out / name
    done = run / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(run, ignore_errors=True)
    port = free_port()
    server = Server(serve_args(a, world), port, out / f"{name}.server")
    watcher = None
    try:
        first_start = server.start()
        cfg = train_config(a, policy, world, server.url)
        if kill_after:
            watcher = Watcher(server, kill_after, pause=a.pause, until_skipped=(run / "metrics.jsonl") if until_skipped
                              else None, down_timeout=a.timeout_run)
            watcher.start()
        status = run_training(name, cfg, out, a.timeout_run)
        if watcher is not None:
            watcher.stop.set()
            watcher.join(timeout=a.timeout_run)
        answered = (watcher.base if watcher else 0) + (server.answered() or 0)
    finally:
        if watcher is not None:
            watcher.stop.set()
        server.close()
    result = {"run": name, **status, "server_first_start_s": round(first_start, 3), "requests_answered": answered,
              "faults": watcher.faults if watcher else [], "watcher_error": watcher.error if watcher else None,
              **summarize(run)}
    if not a.keep_checkpoints:
        shutil.rmtree(run / "checkpoints", ignore_errors=True)  # 1.6 GB each; final/ holds the weights compared
    if status.get("returncode") == 0:
        done.write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", nargs=2, metavar=("CONFIG", "RUN_DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default="runs/faults")
    ap.add_argument("--policy", default=None, help="default: the cached cold-start policy, else the base model")
    ap.add_argument("--served-engine", choices=("bm25", "simulated"), default="bm25")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--questions", type=int, default=2)
    ap.add_argument("--group", type=int, default=2)
    ap.add_argument("--turns", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retries", type=int, default=5, help="http engine retries per request")
    ap.add_argument("--backoff", type=float, default=0.5, help="first retry delay, doubled each time")
    ap.add_argument("--timeout", type=float, default=30.0, help="http engine seconds per request")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between a kill and the restart")
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--runs", default=",".join(RUNS))
    ap.add_argument("--timeout-run", type=float, default=900.0, help="seconds one training run may take")
    ap.add_argument("--keep-checkpoints", action="store_true")
    a = ap.parse_args(argv)
    if a.child:
        return child(*a.child)

    import torch

    torch.set_num_threads(1)
    from zerosearch.data.world import cached_world

    t_all = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    world = cached_world()
    policy = a.policy or pick_policy()
    wanted = [r for r in a.runs.split(",") if r]
    results: dict[str, Any] = {}
    results["unfaulted"] = one_run("unfaulted", a, out, policy, world, [], False)
    total = results["unfaulted"]["requests_answered"]
    # Kill points spread over the unfaulted run's answered requests 1 .. total - 1 (request 1 is the trainer's
    # start-up check, the others are rollout searches), so every kill is followed by a search that meets it.
    last = max(total - 1, 1)
    kills = sorted({round(1 + i * (last - 1) / max(a.kills - 1, 1)) for i in range(a.kills)})
    if "restarts" in wanted:
        results["restarts"] = one_run("restarts", a, out, policy, world, kills, False)
    outage_at = kills[len(kills) // 2]
    if "outage" in wanted:
        results["outage"] = one_run("outage", a, out, policy, world, [outage_at], True)

    base = out / "unfaulted"
    report: dict[str, Any] = {
        "bench": "faults", "served_engine": a.served_engine, "policy": policy, "seed": a.seed,
        "shape": {"steps": a.steps, "questions": a.questions, "group": a.group, "turns": a.turns, "tokens": a.tokens,
                  "k": a.k},
        "http_engine": {"retries": a.retries, "backoff_s": a.backoff, "retry_window_s": retry_window(a.retries, a.backoff),
                        "timeout_s": a.timeout},
        "kill_after_requests": kills, "outage_after_requests": outage_at, "pause_s": a.pause,
        "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
    }
    for name, r in results.items():
        report[name] = r
    if "restarts" in results:
        report["restarts_vs_unfaulted"] = compare(base, out / "restarts")
        r = results["restarts"]
        report["restarts_lost_nothing"] = bool(
            r["finished"] and not r["steps_skipped"] and not r["trained_steps_with_failed_searches"]
            and len(r["faults"]) == a.kills and report["restarts_vs_unfaulted"]["metric_rows_equal"]
            and report["restarts_vs_unfaulted"]["trajectories_equal"]
            and report["restarts_vs_unfaulted"]["policy_sha256_equal"])
    if "outage" in results:
        o = results["outage"]
        first_skip = min(o["steps_skipped"]) if o["steps_skipped"] else None
        report["outage_vs_unfaulted_before_skip"] = compare(base, out / "outage", upto=first_skip) \
            if first_skip else None
        report["outage_down_over_window"] = round(o["faults"][0]["down_s"] / report["http_engine"]["retry_window_s"], 2) \
            if o["faults"] else None
        report["outage_as_expected"] = bool(o["finished"] and len(o["steps_skipped"]) == 1
                                            and not o["trained_steps_with_failed_searches"]
                                            and o["steps_trained"] == a.steps - 1)
    report["wall_s"] = round(time.perf_counter() - t_all, 1)
    line = json.dumps(report)
    (out / "faults.json").write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
