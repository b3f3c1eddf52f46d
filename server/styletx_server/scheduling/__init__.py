"""Who runs when: call slots, the in-flight pixel budget, the bounded admission queue with its
workers, and fair order across tenants."""
