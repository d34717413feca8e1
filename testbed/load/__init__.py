"""Load: when each frame is due (open-loop arrival schedules, or closed loop), the camera streams, the
random dimensions of a run (fan-out per frame, service times), every one seeded, and stage A's pacing."""
from testbed.load.arrivals import ARRIVALS, CLOSED, check_arrival, closed_window, schedule  # noqa: F401
from testbed.load.streams import (offered_schedule, stream_config, stream_rate, stream_schedule,  # noqa: F401
                                  stream_seed, total_rate)
