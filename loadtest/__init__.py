"""Locust load tests of the real cluster: a center's day, the breaking point, failover under load.

(Fuller documentation follows once the figures are in.)
"""
