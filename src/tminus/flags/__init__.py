"""Feature flag stores (flagd JSON files, Redis) and the sticky, versioned bucketing they share."""
