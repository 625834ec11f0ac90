"""Access control building blocks with no HTTP in them: password hashing, random secrets, the permission table,
and who a request acts for (``Principal``)."""
