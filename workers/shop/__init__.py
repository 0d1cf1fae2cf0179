"""The shop: a catalogue, stock, orders, and the services that price and fulfil them.

``contracts`` holds the wire types; ``pricing`` the rules; ``db`` the tables
(in the same SQLite file as the gateway's task store); ``services`` the RPC
methods; ``consumers`` the order.created consumers of the worker process.
"""
