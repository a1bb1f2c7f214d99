"""A tiny code location for the dead-run tests: two steps that share the one-slot gpu pool.

``blocker`` writes its pid to $AIPLATFORM_TEST_MARKER and sleeps until killed; ``follower``
returns at once, but only once it holds the pool's slot.
"""

import os
import time
from pathlib import Path

import dagster as dg


@dg.asset(pool="gpu")
def blocker() -> None:
    Path(os.environ["AIPLATFORM_TEST_MARKER"]).write_text(str(os.getpid()))
    time.sleep(600)


@dg.asset(pool="gpu")
def follower() -> None:
    return None


defs = dg.Definitions(
    assets=[blocker, follower],
    jobs=[
        dg.define_asset_job("blocker_job", [blocker]),
        dg.define_asset_job("follower_job", [follower]),
    ],
)
