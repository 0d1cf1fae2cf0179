"""taskgate's HTTP and Server-Sent-Events front door."""
