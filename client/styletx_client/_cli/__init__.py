"""The pieces of the `styletx-client` command; `styletx_client.cli` is its entry point.

`common`: exit codes, connection flags, the client they make, reading and writing files;
`stylize`: the stylize command (one flag per proto option, the progress bar, Ctrl-C);
`jobs`: job get, watch and cancel; `health`: the health command; `failures`: SDK errors as
exit codes and messages a shell user can act on.
"""
