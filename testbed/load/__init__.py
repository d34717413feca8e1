"""Load: when each frame is due (open-loop arrival schedules) and the random dimensions of a run
(fan-out per frame, service times), every one seeded."""
from testbed.load.arrivals import ARRIVALS, schedule  # noqa: F401
