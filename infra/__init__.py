"""Process plumbing shared by every taskgate process: the lowest layer.

Settings, logging, metrics serving, process running, SQLite files and the
private RabbitMQ node the scripts and tests start. Imports nothing else of
taskgate's; ``rpc``, ``workers``, ``gateway`` and ``taskgate`` may import it.
"""
