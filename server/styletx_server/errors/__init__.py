"""What can go wrong with a call and how it reads on the wire: typed refusals (`refusals`) and
the one mapping of refusals and engine failures to gRPC statuses with rich details (`statuses`)."""
