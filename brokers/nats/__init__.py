"""NATS JetStream: a work-queue stream per run, one durable pull consumer shared by the replicas."""
