"""A shared MLflow tracking server, as a team would run one: `mlflow server` on 127.0.0.1 (sqlite backend, an
artifacts folder it serves), a study and a tuning study writing to it from two processes at once, the runs
read back through its REST API, and resume-by-hash working over HTTP as it does on sqlite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import DEBUG_STUDY, free_port, write_params


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    store = tmp_path / "server"
    store.mkdir()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{store / 'mlflow.db'}",
        "--artifacts-destination",
        str(store / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = open(store / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, (store / "server.log").read_text()[-3000:]
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def _api(url: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


def _runs(url: str, study: str) -> list[dict]:
    exp = _api(url, "experiments/search", {"filter": f"name = '{study}'", "max_results": 10})["experiments"][0]
    out, token = [], None
    while True:
        page = _api(
            url, "runs/search", {"experiment_ids": [exp["experiment_id"]], "max_results": 500, "page_token": token}
        )
        out += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            return out


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_a_study_and_a_tuning_study_share_one_mlflow_server(tmp_path, monkeypatch, mlflow_server):
    monkeypatch.chdir(tmp_path)
    raw = {
        "studies": {"optimizers": dict(DEBUG_STUDY), "second": {**DEBUG_STUDY, "techniques": ["sgd"]}},
        "tuning": {"optimizers": {"techniques": ["adam"], "trials": 3}},
    }
    write_params(tmp_path / "params.yaml", raw)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "OPTUNA_STORAGE": f"sqlite:///{tmp_path / 'optuna.db'}",
    }
    techbench = [sys.executable, "-m", "techbench.cli", "-q"]
    procs = [
        subprocess.Popen([*techbench, *argv], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for argv in (["run", "second"], ["tune", "optimizers"])
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out.decode()[-3000:]
    assert not (tmp_path / "mlflow.db").exists()  # everything went to the server

    runs = _runs(mlflow_server, "optimizers")
    assert not [r for r in runs if r["info"]["status"] == "RUNNING"]
    kinds = [_tags(r).get("kind") for r in runs if _tags(r).get("complete") == "1"]
    assert kinds.count("trial") == 3 and kinds.count("run") == DEBUG_STUDY["seeds"]  # the tuned re-runs
    second = [r for r in _runs(mlflow_server, "second") if _tags(r).get("kind") == "run"]
    assert len(second) == DEBUG_STUDY["seeds"] and {r["info"]["status"] for r in second} == {"FINISHED"}
    assert (tmp_path / "results" / "second" / "summary.json").exists()  # records read back through the server

    again = subprocess.run([*techbench, "run", "second"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len([r for r in _runs(mlflow_server, "second") if _tags(r).get("kind") == "run"]) == len(second)
