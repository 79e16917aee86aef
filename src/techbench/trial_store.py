"""The Optuna side of tuning that several workers share: the storage, the budget they share, and the
liveness of their trials.

Every database URL opens as Optuna's RDBStorage with heartbeats, on sqlite (one machine: local workers,
or a resumed study) as on PostgreSQL (workers on several machines): each running trial's worker records a
heartbeat every ``heartbeat`` seconds, and a trial whose heartbeat is older than three intervals (its worker
was killed, preempted, lost its machine) is failed by the next worker that looks (``fail_stale_trials``) and
re-queued once more with the same hyperparameters (Optuna 5's RetryHeartbeatStaleTrialCallback). Optuna's
JournalStorage has no heartbeat, so it is not used: a study on one machine without a database server is
the sqlite file every other command already uses.

Workers share one budget: a worker asks only for the trials not yet finished, running or queued, and after
asking keeps only those within the budget by trial number (two workers asking at the same moment cannot
both take the last trial; the surplus one is failed untrained, with a user attr saying so). A trial's
sampler is seeded from (sampler seed, trial number): a resumed study or a second worker proposes new
points, and the same study on the same storage proposes the same points however many workers ran it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import fail_stale_trials, get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from techbench.errors import ConfigError
from techbench.liveness import is_dead, this_process
from techbench.tracking import absolute_sqlite, store_lock

DEFAULT_STORAGE = "sqlite:///optuna.db"
STORAGE_EXAMPLES = ["sqlite:///optuna.db", "postgresql+psycopg://user@host:5432/db", "mysql+pymysql://user@host/db"]
HEARTBEAT_S = 10  # default seconds between a running trial's heartbeats (tuning.<study>.heartbeat)
STALE_AFTER = 3  # heartbeats missed before a running trial counts as abandoned
MAX_RETRY = 2  # times an abandoned trial is re-queued
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
SURPLUS = "surplus"  # user attr of a trial asked beyond the budget by a concurrent worker (failed untrained)
WORKER = "worker"  # user attr: host:pid of the process training the trial


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Optuna warns that heartbeats are experimental and "supposed to be used with Study.optimize": with
    ask-and-tell they are started and checked here, which is what those warnings ask for."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


def storage_url(storage: str | None = None) -> str:
    return absolute_sqlite(storage or os.environ.get("OPTUNA_STORAGE") or DEFAULT_STORAGE)


def check_storage(storage: str | None = None) -> str:
    """The storage URL, or a ConfigError naming where it came from when SQLAlchemy cannot open that kind of
    database (unknown dialect, driver not installed); nothing is connected to or created."""
    url = storage_url(storage)
    if not storage and not os.environ.get("OPTUNA_STORAGE"):
        return url
    key, source = ("--storage", "the command line") if storage else ("OPTUNA_STORAGE", "the environment")
    try:
        make_url(url).get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ImportError) as e:
        raise ConfigError(
            key, f"cannot open {url!r} as an Optuna storage ({type(e).__name__}: {e})", STORAGE_EXAMPLES, source
        ) from None
    return url


def open_storage(storage: str | None = None, heartbeat: int = HEARTBEAT_S) -> RDBStorage:
    url = storage_url(storage)
    # sqlite serializes writers: several local workers wait for each other instead of failing at once.
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with store_lock(url), quiet():  # a fresh sqlite file: one process creates the schema
        return RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=heartbeat,
            grace_period=STALE_AFTER * heartbeat,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        )


def trial_seed(sampler_seed: int, number: int) -> int:
    """The seed of the sampler that proposes trial ``number`` (a well-mixed function of both)."""
    return int(np.random.SeedSequence([sampler_seed, number]).generate_state(1)[0])


def fail_abandoned(study: optuna.Study) -> None:
    """Fail (and re-queue, as a stale heartbeat would) the running trials nobody trains any more: those whose
    heartbeat is stale, those whose worker died on this machine (found at once, without waiting for the
    heartbeat's grace period), and those older than the grace period with no worker at all (left by a
    version without heartbeats)."""
    with quiet():
        fail_stale_trials(study)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    storage = study._storage
    grace = datetime.timedelta(seconds=STALE_AFTER * (storage.get_heartbeat_interval() or HEARTBEAT_S))
    interval = datetime.timedelta(seconds=storage.get_heartbeat_interval() or HEARTBEAT_S)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        # A trial just asked carries the owner it was re-queued with until its new worker claims it (at once).
        age = datetime.datetime.now() - (trial.datetime_start or datetime.datetime.now())
        owner = trial.user_attrs.get(WORKER)
        abandoned = age > grace if owner is None else age > interval and is_dead(owner)
        if abandoned and _fail(storage, trial._trial_id):
            retry(study, storage.get_trial(trial._trial_id))


def _fail(storage, trial_id: int) -> bool:
    try:
        return storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:  # another worker failed it first
        return False


def claim(study: optuna.Study, trial: optuna.Trial) -> None:
    """Mark a trial just asked as this process's (what ``fail_abandoned`` reads), after its first heartbeat:
    a trial with an owner always has a heartbeat that goes stale if the owner dies before training it."""
    if is_heartbeat_enabled(study._storage):
        study._storage.record_heartbeat(trial._trial_id)
    trial.set_user_attr(WORKER, this_process())


def room(study: optuna.Study, trials: int) -> tuple[int, int]:
    """(trials this worker may ask for now, trials other workers are running): the budget less the finished
    and running trials, after failing (and re-queueing) the abandoned ones."""
    fail_abandoned(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    finished = sum(s in FINISHED for s in states)
    running = states.count(TrialState.RUNNING)
    return max(trials - finished - running, 0) if finished < trials else 0, running


def within_budget(study: optuna.Study, asked: list[optuna.Trial], trials: int) -> list[optuna.Trial]:
    """The asked trials whose number is among the first ``trials`` finished or running ones; the others (a
    concurrent worker took the same room) are failed untrained."""
    taken = sorted(t.number for t in study.get_trials(deepcopy=False) if t.state in (*FINISHED, TrialState.RUNNING))
    kept = set(taken[:trials])
    for trial in asked:
        if trial.number not in kept:
            trial.set_user_attr(SURPLUS, "asked by two workers at once beyond the budget; not trained")
            study.tell(trial, state=TrialState.FAIL)
    return [t for t in asked if t.number in kept]


@contextlib.contextmanager
def heartbeats(study: optuna.Study, trials: list[optuna.Trial]) -> Iterator[None]:
    """Each trial's heartbeat while the block trains them (what marks a trial alive to the other workers)."""
    with contextlib.ExitStack() as stack:
        for trial in trials:
            stack.enter_context(get_heartbeat_thread(trial._trial_id, study._storage))
        yield


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Samplers that can propose several trials at once: TPE with the constant liar (a running trial counts as a
    bad result, so concurrent proposals spread out), random search, scrambled Sobol (QMC)."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Plain-data search space -> trial.suggest_* calls."""
    hp: dict[str, Any] = {}
    for name, dim in space.items():
        if "choices" in dim:
            hp[name] = trial.suggest_categorical(name, dim["choices"])
        elif isinstance(dim["low"], int) and isinstance(dim["high"], int) and not dim.get("float"):
            hp[name] = trial.suggest_int(name, dim["low"], dim["high"], log=dim.get("log", False))
        else:
            hp[name] = trial.suggest_float(name, dim["low"], dim["high"], log=dim.get("log", False))
    return hp
