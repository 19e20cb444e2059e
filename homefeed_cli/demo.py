"""`make demo`: the whole system on this machine, in a few minutes, saying what it does.

  1. generate a sample marketplace (events + articles)         homefeed.sample.marketplace
  2. run the Kubeflow pipeline locally through kfp.local        pipeline.run_local
     (extract on an embedded BigQuery emulator -> TF Transform on Beam's DirectRunner -> train ->
     evaluate (the held-out model) -> the same model trained on every view -> FAISS index -> gated
     publish into WORKDIR)
  3. start the candidate service on a free loopback port        `candidates serve --model WORKDIR`
  4. ask it for a few users' candidates (and an unknown user's, to show the fallback)
  5. stop the service

Run it with `python -m homefeed_cli.demo --workdir demo` (what `make demo` does). Running it again
reuses the sample data and publishes a new version only if it is as good as the live one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from homefeed import lifetime
from serving.query import wait_until_ready

# Small enough to finish in a few minutes on two cores, big enough that recall@200 means something
# (the corpus is several times larger than 200) and a personalised model beats popularity.
DEMO_DATA: dict[str, Any] = {"users": 1000, "articles": 2000, "days": 30, "seed": 42}
DEMO_PARAMETERS: dict[str, Any] = {"epochs": 8, "batch_size": 512, "beam_direct_num_workers": 1}
DEMO_USERS = 3
UNKNOWN_USER = "visitor-not-seen-before"
SHOW_CANDIDATES = 8
READY_TIMEOUT_S = 180.0


def say(message: str = "") -> None:
    print(message, flush=True)


def step(number: int, total: int, title: str) -> None:
    say()
    say(f"[{number}/{total}] {title}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        try:
            return error.code, json.loads(body)
        except ValueError:
            return error.code, body.decode(errors="replace")


def serve_command(publish_root: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "homefeed_cli",
        "serve",
        "--model",
        str(publish_root),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def start_service(publish_root: Path, port: int, log_path: Path) -> subprocess.Popen:
    log = open(log_path, "w")
    return subprocess.Popen(
        lifetime.dies_with_parent(serve_command(publish_root, port)),  # no service outlives the demo
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the demo does not hit the service mid-answer
    )


def stop_service(process: subprocess.Popen, timeout: float = 20.0) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully on SIGTERM
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    return process.returncode


def pick_users(version_dir: Path, count: int) -> list[dict[str, Any]]:
    """A few users with several views, from the published version's history snapshot."""
    import pyarrow.parquet as pq

    path = version_dir / "user_histories.parquet"
    columns = ["user_id", "history"]
    if "recent_queries" in pq.ParquetFile(path).schema_arrow.names:
        columns.append("recent_queries")  # the pipeline ran with searches
    table = pq.read_table(path, columns=columns)
    rows = table.to_pylist()
    rows = [r for r in rows if len(r["history"] or []) >= 5]
    rows.sort(key=lambda r: r["user_id"])
    if not rows:
        return []
    stride = max(1, len(rows) // count)
    return rows[::stride][:count]


def titles_of(version_dir: Path) -> dict[str, dict[str, Any]]:
    import pyarrow.parquet as pq

    path = version_dir / "articles.parquet"
    if not path.exists():
        return {}
    return {row["article_id"]: row for row in pq.read_table(path).to_pylist()}


def describe_article(article_id: str, articles: dict[str, dict[str, Any]]) -> str:
    row = articles.get(article_id) or {}
    extra = ", ".join(str(row[k]) for k in ("category", "region") if row.get(k))
    title = row.get("title") or "(no title)"
    return f"{article_id}  {title}" + (f"  [{extra}]" if extra else "")


def show_answer(
    user: str,
    answer: dict[str, Any],
    articles: dict[str, dict[str, Any]],
    history: list[str] | None,
    searches: list[str] | None = None,
) -> None:
    say()
    if history:
        say(f"  user {user}: last views")
        for article in history[:3]:
            say(f"      {describe_article(article, articles)}")
    elif not searches:
        say(f"  user {user} (never seen)")
    if searches:
        say(f"  user {user}: last searches  " + "  ".join(f'"{q}"' for q in searches[:4]))
    how = f"fallback: {answer.get('fallback_reason')}" if answer.get("fallback") else "personalised"
    say(
        f"    top {SHOW_CANDIDATES} of {len(answer['candidates'])} candidates ({how}, model {answer['model_version']}):"
    )
    for rank, candidate in enumerate(answer["candidates"][:SHOW_CANDIDATES], 1):
        say(f"    {rank:>2}. {describe_article(candidate['article_id'], articles)}  score {candidate['score']:.3f}")


SEARCHER = "demo-searcher"  # never viewed anything; known only from one search


def show_search_event(base: str, articles: dict[str, dict[str, Any]]) -> None:
    """POST one search for a user with no views, then ask for their candidates."""
    import urllib.request

    body = {
        "events": [
            {
                "type": "search",
                "user_id": SEARCHER,
                "query": "baby stroller",
                "searched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        ]
    }
    say()
    say(f"  $ curl -X POST {base}/v1/events -d '{json.dumps(body)}'")
    request = urllib.request.Request(
        f"{base}/v1/events", data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            say(f"    {response.status} {response.read().decode()}")
    except OSError as error:
        say(f"    not accepted ({error}); skipping the search-only user")
        return
    status, answer = get_json(f"{base}/v1/users/{SEARCHER}/candidates?k=200")
    if status == 200:
        show_answer(SEARCHER, answer, articles, None, ["baby stroller"])


def run_demo(workdir: Path, data_dir: Path | None = None, parameters: dict[str, Any] | None = None) -> int:
    from homefeed.sample.marketplace import SampleDataConfig, write_sample_data
    from pipeline.run_local import run_local

    total = 5
    started = time.monotonic()
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"homefeed-candidates demo: everything runs on this machine, under {workdir}")

    step(1, total, "Sample data: a simulated second-hand marketplace feed")
    data_dir = (data_dir or workdir / "data").resolve()
    events, articles = data_dir / "events.parquet", data_dir / "articles.parquet"
    searches = data_dir / "searches.parquet"
    if events.exists() and articles.exists():
        say(f"  reusing {events} and {articles}" + (f" and {searches}" if searches.exists() else ""))
    else:
        summary = write_sample_data(data_dir, SampleDataConfig(**DEMO_DATA))
        say(
            f"  wrote {summary['events']} views by {summary['users']} users of {summary['articles']} listings "
            f"and {summary['searches']} searches to {data_dir}"
        )

    step(
        2, total, "Pipeline: extract -> transform -> train -> evaluate, final fit -> index -> gated publish (kfp.local)"
    )
    say(f"  each stage runs as a Kubeflow component in a local subprocess; full log: {workdir / 'run-local.log'}")
    params = {**DEMO_PARAMETERS, **(parameters or {})}
    result = run_local(events, articles, workdir, params, searches=searches if searches.exists() else None)
    for line in result.summary_lines():
        say(f"  {line}")
    if not (workdir / "LATEST").exists():
        say("  nothing is published (the gate refused the model and there is no earlier version): stopping here")
        return 1

    step(3, total, "Service: starting `candidates serve` on a free loopback port")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service_log = workdir / "service.log"
    say(f"  $ candidates serve --model {workdir} --host 127.0.0.1 --port {port}   (log: {service_log})")
    process = start_service(workdir, port, service_log)
    try:
        service_started = time.monotonic()
        ready = wait_until_ready(base, process, timeout_s=READY_TIMEOUT_S, poll_s=0.5, log_path=service_log)
        seconds = time.monotonic() - service_started
        say(f"  ready in {seconds:.1f}s: {json.dumps(ready)}")

        step(4, total, "Queries: GET /v1/users/{user_id}/candidates")
        version_dir = workdir / "versions" / (workdir / "LATEST").read_text().strip()
        article_rows = titles_of(version_dir)
        for user in pick_users(version_dir, DEMO_USERS):
            status, answer = get_json(f"{base}/v1/users/{user['user_id']}/candidates?k=200")
            if status != 200:
                raise RuntimeError(f"GET candidates for {user['user_id']} answered {status}: {answer}")
            show_answer(user["user_id"], answer, article_rows, list(user["history"]), user.get("recent_queries"))
        status, answer = get_json(f"{base}/v1/users/{UNKNOWN_USER}/candidates?k=200")
        if status != 200:
            raise RuntimeError(f"GET candidates for an unknown user answered {status}: {answer}")
        show_answer(UNKNOWN_USER, answer, article_rows, None)
        if searches.exists():
            show_search_event(base, article_rows)
    except BaseException:
        say(f"  the service log is at {service_log}")
        raise
    finally:
        step(5, total, "Stopping the service")
        code = stop_service(process)
        say("  stopped" if code in (0, -signal.SIGTERM) else f"  stopped (exit status {code}; see {service_log})")

    say()
    say(f"Done in {time.monotonic() - started:.0f}s. Serve it again with: candidates serve --model {workdir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m homefeed_cli.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir", default="demo", help="where data, pipeline runs and published models go (default: %(default)s)"
    )
    parser.add_argument("--data", help="use these events.parquet + articles.parquet instead of generating sample data")
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {DEMO_PARAMETERS['epochs']})")
    args = parser.parse_args(argv)

    from homefeed.logs import configure_logging

    configure_logging(-1)  # the demo prints its own progress; library warnings still show
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parameters = {"epochs": args.epochs} if args.epochs else {}
    try:
        # Whatever stops the demo (Ctrl-C, SIGTERM, SIGKILL), its pipeline tasks and service stop too.
        with lifetime.children_die_with_me("demo"):
            return run_demo(Path(args.workdir), Path(args.data) if args.data else None, parameters)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except (RuntimeError, TimeoutError, FileNotFoundError, ValueError) as error:
        say(f"demo failed: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
