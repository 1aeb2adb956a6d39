"""This process's part in a search (local, chief or worker) and what every process must share."""

from __future__ import annotations

import contextlib

from ..loading import Data


def search_settings(model, train: Data, val: Data, *, dimensions, seed, batch_size, trial_steps, tuner,
                    rules) -> dict:
    """What must be equal in every process of a distributed search for its trials to compare."""
    from .distributed import fingerprint

    def arrays(data):
        return list(data.x) + (data.y if isinstance(data.y, list) else [data.y])

    return {
        "model": f"{model.name}:{fingerprint([v.numpy() for v in model.weights])}",
        "data": fingerprint(arrays(train) + arrays(val)),
        "seed": seed, "batch_size": batch_size, "trial_steps": trial_steps, "tuner": tuner,
        "rules": sorted(rules), "dimensions": [d.to_dict() for d in dimensions],
    }


@contextlib.contextmanager
def _search_environment(cluster, role):
    """Keras Tuner's distributed variables for ``cluster`` (none for a local
    search) and its output silenced, for building the tuner and searching."""
    import os
    import warnings

    from .distributed import ENV_ORACLE_IP, tuner_environment

    if role is None and os.environ.get(ENV_ORACLE_IP):
        warnings.warn(f"{ENV_ORACLE_IP} is set, but the search was not asked to be distributed, so it runs in "
                      "this process. Pass --distributed chief or worker (distributed= in Python) to join a "
                      "distributed search.", stacklevel=4)
    with tuner_environment(cluster), _quiet_tuner():
        yield


def _run_search(search, oracle, cluster, settings, progress) -> None:
    """Run the tuner's search in this process's part: local, chief or worker."""
    from .distributed import check_settings, serve, wait_for_oracle, work, write_settings

    if cluster is None:
        search.search(verbose=0)
    elif cluster.role == "chief":
        write_settings(search.project_dir, settings)
        serve(lambda: search.search(verbose=0), oracle, cluster, progress)
    else:
        wait_for_oracle(cluster)
        check_settings(search.project_dir, settings, cluster)
        work(lambda: search.search(verbose=0), cluster)


@contextlib.contextmanager
def _quiet_tuner():
    """Keras Tuner prints trial summaries to stdout; the CLI's stdout is for results."""
    import io
    import logging

    logger = logging.getLogger("keras_tuner")
    level = logger.level
    logger.setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            yield
        finally:
            logger.setLevel(level)
