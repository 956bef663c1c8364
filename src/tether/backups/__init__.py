"""Backups of instances' data (issue 10): the encrypted file format (`sealed`) and one module per
engine that streams a dump into it and restores from it (`postgres`). Nothing here knows about
environments, the store or the worker: those wire it in later."""
