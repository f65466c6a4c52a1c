"""Delivery tracking: from the MSSanté instance's log to `delivery` journal records."""
