"""Jobs that outlive streams: one job (its events and subscribers, its run on a worker, its
accounting), the registry of jobs and results by request key, and what a job looks like to the job
RPCs. The registry is the seam a shared store implements."""
