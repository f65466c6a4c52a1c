"""Inactive MSSanté mailboxes (TRACE-4): last logins, the notice before deletion, never a deletion."""
