"""Remote Python environments (section 13): the spec found in the project, and the client."""
