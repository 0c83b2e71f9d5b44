"""The rotators: `random` (values nobody else checks), `command` (an operator's
program applies and tests the value) and `postgresql` (alternating users)."""
