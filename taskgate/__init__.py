"""The ``taskgate`` command line: RPC calls, uploads and task streams, dead letters, queues,
development tokens and the private broker, from the shell (``taskgate --help``)."""
