"""End to end through spark-submit on a real (local) cluster: two executor JVMs, each with
its own Python workers, so models, weights and results cross process boundaries."""
import re

from tests.helpers import spark_submit


def test_async_and_elastic_modes_train_on_local_cluster():
    """The parameter server on the driver, workers in two other JVMs' Python processes; EASGD's
    workers keep their own weights in those processes between rounds, ADAG normalizes its
    pushes. (Sync rounds on local-cluster run in tests/spark/test_faults.py, with and without a
    killed Python worker.)"""
    run = spark_submit(["--master", "local-cluster[2,1,1024]", "examples/mnist_app.py",
                        "--mode", "async,hogwild,ssp,adag,easgd", "--staleness", "1", "--tau", "batch",
                        "--workers", "2", "--epochs", "3", "--verbose", "0"])
    assert run.returncode == 0, run.stderr[-3000:]
    found = dict(re.findall(r"(\w+): test accuracy: ([0-9.]+).*?, 2 workers", run.stdout))
    assert set(found) == {"async", "hogwild", "ssp", "adag", "easgd"}, run.stdout[-2000:]
    for mode, accuracy in found.items():
        assert float(accuracy) >= 0.88, (mode, accuracy)
