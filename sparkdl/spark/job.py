"""The fit's Spark job: one barrier job whose tasks live as long as the fit.

``execution(sc, partitions, transport)`` decides whether a fit can run as one job (barrier
mode needs a slot for every partition at once and no dynamic allocation) and says why not.
``FitJob`` runs the job in a driver thread while the fit loop talks to its tasks through
the coordinator; it is cancelled (its tasks interrupted) when the fit ends in any way, and
says when its tasks cannot all run because executors were lost and not replaced.

The barrier stage is made a shuffle-map stage (its few result rows go through a one-partition
shuffle): Spark retries a failed barrier shuffle-map stage as a whole, up to
``spark.stage.maxConsecutiveAttempts`` times, but never a barrier result stage.
"""
from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

IN_JOB = "one job per fit"


def task_slots(sc) -> int | None:
    """How many tasks the cluster runs at once now (None when Spark does not say)."""
    try:
        jsc = sc._jsc.sc()
        return int(jsc.maxNumConcurrentTasks(jsc.resourceProfileManager().defaultResourceProfile()))
    except Exception:  # noqa: BLE001 - an internal API; without it, assume the default parallelism
        return None


def executor_ids(sc) -> set[str] | None:
    """The ids of the executors registered now (None when Spark does not say, and in local
    mode, which has no executors to lose and whose scheduler logs a warning when asked)."""
    master = str(getattr(sc, "master", "") or "")
    if master == "local" or master.startswith("local["):
        return None
    try:
        return set(str(sc._jsc.sc().getExecutorIds().mkString("\n")).split("\n")) - {""}
    except Exception:  # noqa: BLE001 - an internal API; without it the fit cannot name lost executors
        return None


def fallback_reason(sc, partitions: int, transport: str) -> str | None:
    """Why the fit cannot run as one barrier job, or None when it can."""
    if transport == "spark":
        return "transport='spark' moves weights by Spark broadcast and treeReduce, a job per round"
    if sc.getConf().get("spark.dynamicAllocation.enabled", "false").lower() == "true":
        return "barrier jobs cannot run with spark.dynamicAllocation.enabled=true"
    slots = task_slots(sc)
    if slots is not None and partitions > slots:
        return (f"{partitions} partitions train but the cluster runs {slots} tasks at once; a "
                f"barrier job needs them all at once (set num_workers <= {slots})")
    return None


def raise_job_error(error: BaseException):
    """Raise what failed the fit's job: the ValueError or TypeError a task raised, else a
    RuntimeError with the first line of Spark's."""
    from sparkdl.spark.frames import python_error
    mapped = python_error(error)
    if mapped is not error:
        raise mapped from error
    raise RuntimeError(f"SparkModel.fit: the fit's Spark job failed: {str(error).splitlines()[0][:2000]}") from error


class ClassicSite:
    """Where a classic session's fit runs: its settings, the driver's data-plane address, the
    model's broadcast and the fit's barrier job (``sparkdl.spark.connect.ConnectSite`` is the
    same for a Spark Connect session)."""


    def __init__(self, sc):
        self.sc = sc

    @property
    def conf(self):
        """The SparkConf (``get(key, default)``)."""
        return self.sc.getConf()

    def data_plane_address(self) -> tuple[str, str]:
        """``(advertised host, bind address)`` of servers on the driver: ``spark.driver.host``
        and ``spark.driver.bindAddress`` (default: that host)."""
        conf = self.conf
        host = conf.get("spark.driver.host", "127.0.0.1")
        return host, conf.get("spark.driver.bindAddress", host)

    def ship_model(self, model, who: str = "SparkModel.fit"):
        """The model as its tasks receive it: a broadcast (``executor.ModelBroadcast``)."""
        from sparkdl.spark.executor import ModelBroadcast
        return ModelBroadcast(self.sc, model)

    def fallback_reason(self, partitions: int, transport: str, who: str) -> str | None:
        return fallback_reason(self.sc, partitions, transport)

    def start_job(self, blocks, val_blocks, task, group: str, description: str, end=None) -> FitJob:
        """The fit's barrier job over the blocks, zipped with the validation blocks (``end``,
        the tasks' ``fit_task.FitEndpoint``, is for the other sites)."""
        rdd = blocks.rdd if val_blocks is None else blocks.rdd.zip(val_blocks.rdd)
        return FitJob(rdd, task, group, description)


class FitJob:
    """A barrier job running ``task`` (a ``mapPartitionsWithIndex`` function) over ``rdd`` in a
    driver thread, named ``description`` in the Spark UI under job group ``group``."""

    def __init__(self, rdd, task, group: str, description: str):
        self.sc = rdd.context
        self.group = group
        self._rdd = rdd.barrier().mapPartitionsWithIndex(task).map(lambda r: (0, r)).partitionBy(1).values()
        self.error: BaseException | None = None
        self.executors = executor_ids(self.sc)      # those the job starts with
        self._thread = threading.Thread(target=self._run, args=(description,), daemon=True,
                                        name="sparkdl-fit-job")
        self._thread.start()

    def _run(self, description: str) -> None:
        try:
            self.sc.setJobGroup(self.group, description, True)
            self._rdd.collect()
        except BaseException as error:  # noqa: BLE001 - handed to the fit loop by check()
            self.error = error

    def check(self) -> None:
        """Raise what ended the job early (a failure Spark gave up retrying)."""
        if self._thread.is_alive():
            return
        if self.error is not None:
            raise_job_error(self.error)
        raise RuntimeError("SparkModel.fit: the fit's Spark job ended before the driver said stop")

    def short_of_slots(self, tasks: int) -> str | None:
        """Why the job's ``tasks`` cannot all run at once now — the cluster has fewer slots,
        executors were lost and none replaced them — or None when it has the slots."""
        slots = task_slots(self.sc)
        if slots is None or slots >= tasks:
            return None
        now = executor_ids(self.sc)
        lost = sorted(self.executors - now, key=lambda e: (len(e), e)) if self.executors and now is not None else []
        why = ""
        if lost:
            one = len(lost) == 1
            why = f": executor{'' if one else 's'} {', '.join(lost)} {'was' if one else 'were'} lost"
            if now is not None and not now - (self.executors or set()):      # no executor has come since
                why += f" and no executor replaced {'it' if one else 'them'}"
        return f"its barrier stage needs {tasks} task slots at once and the cluster has {slots}{why}"

    def cancel(self) -> None:
        self.sc.cancelJobGroup(self.group)

    def join(self, timeout: float) -> bool:
        """Wait for the job to end; True when it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()
