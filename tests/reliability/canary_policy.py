"""A user policy whose module, when imported, creates the file named by ``$PCM_TWIN_CANARY``.

The security tests use it to see exactly when a policy named by dotted path is imported
(``tests.reliability.canary_policy:Canary``): never by a ChipHost that does not allow user
policies, and by a scenario that names it (the one way a scenario runs code).
"""

from __future__ import annotations

import os
from pathlib import Path

from controller.firmware.policies import BasePolicy

if os.environ.get("PCM_TWIN_CANARY"):
    Path(os.environ["PCM_TWIN_CANARY"]).touch()


class Canary(BasePolicy):
    """Never wakes, never corrects."""

    name = "canary"
