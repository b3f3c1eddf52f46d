"""Generated code: do not edit. Regenerate with `make proto` from protos/styletx/v1/."""
