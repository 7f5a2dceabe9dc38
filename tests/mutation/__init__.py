"""Mutation testing: how strong the tests are, by one command (`python -m tests.mutation`).

* **Python** (`python_run.py`): mutmut mutates the rules that matter (auth, money,
  rules, the payout service) and runs, for each mutant, only the tests that execute the
  mutated function.
* **Lua** (`lua_run.py`): the changes listed in `planted.py`, each a small wrong edit of
  a Lua script (a flipped comparison, a dropped ZADD, an off-by-one, a skipped
  idempotency check...), planted one at a time; the tests that cover that script must
  fail.

Both work on a snapshot of the tree in a scratch directory (by default under the
system's temporary directory), never on the working tree: other people's files and a
run stopped half-way (Ctrl-C, a crash, kill -9) cannot leave a source file changed.
"""
