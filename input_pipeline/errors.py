"""Errors a user can cause through data: bad files, bad splits, bad records."""


class DataError(Exception):
  """A problem with input data; the message is one line naming the file."""
