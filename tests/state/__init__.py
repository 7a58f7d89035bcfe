"""Tests of `RecoverableState`, each behaviour on the memory and the file system clients."""
