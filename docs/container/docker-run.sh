#!/bin/sh
# Hold /srv/models (mounted read-only at /models) in RAM from a container.
# Either raise the memory-lock limit for the container ...
docker run -d --name memlock-hold \
  --ulimit memlock=-1:-1 \
  -v /srv/models:/models:ro \
  memlock-hold /models
# ... or grant the capability, which lifts the limit:
#   docker run -d --name memlock-hold --cap-add IPC_LOCK -v /srv/models:/models:ro memlock-hold
# The locked pages are page cache charged to the container's memory cgroup: give it
# a --memory limit above the size of the files (memlock checks the headroom first).
# Rescan after adding files:  docker kill -s HUP memlock-hold
# Compose:
#   services:
#     memlock-hold:
#       image: memlock-hold
#       ulimits: {memlock: -1}        # or: cap_add: [IPC_LOCK]
#       volumes: ["/srv/models:/models:ro"]
