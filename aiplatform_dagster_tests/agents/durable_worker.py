"""A workflow process the durability test can kill: ``python -m ... run REQUEST`` or
``python -m ... resume THREAD``, configured by the environment like the CLI.

It adds the test-only ``gate`` tool (blocks until the file AGENT_TEST_GATE_OPENED exists,
after touching AGENT_TEST_GATE_REACHED) so the test can kill it at a known point: after a side
effect has happened, before the step that made it is checkpointed.
"""

import json
import os
import sys
from pathlib import Path

from aiplatform_dagster.agents.runtime import open_runtime
from aiplatform_dagster.config import load_settings
from aiplatform_dagster_tests.agents.extra_tools import gate_tool, with_tools


def main(action: str, argument: str) -> None:
    settings = load_settings()
    gate = gate_tool(
        Path(os.environ["AGENT_TEST_GATE_OPENED"]), Path(os.environ["AGENT_TEST_GATE_REACHED"])
    )
    with open_runtime(settings, tools=with_tools(settings, gate)) as runtime:
        if action == "run":
            result = runtime.run(argument, agent="writer", thread_id="durable-1")
        else:
            result = runtime.resume(argument)
    print(json.dumps(result.as_dict()))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
