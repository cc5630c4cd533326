"""Roles: ``ops`` run and approve, ``managers`` read. The bottom layer every app may ask."""
