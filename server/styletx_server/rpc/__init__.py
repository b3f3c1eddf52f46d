"""The RPC surface: the servicer (one Stylize call, read top to bottom), the job RPCs, the frame
every call runs in (status, slot, record) and the relay of a job's events to a caller."""
