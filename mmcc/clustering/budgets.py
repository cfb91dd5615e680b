"""Sizes of the temporary buffers shared by several clustering modules.

Chunked loops size their chunks from these. No result depends on them (the
tests run the same computations with budgets of a few bytes); they bound
the memory the loops add on top of their inputs and outputs, whatever N.
"""

# One (rows, N) block of the N x N similarity product: float32 in the exact
# torch search, bfloat16 in the screen of the screened search.
SIMILARITY_BLOCK_BYTES = 32 * 2**20

# Feature rows gathered for one batched product of every row with its m
# candidates or set members: a (rows, m, D) float32 copy.
FEATURE_GATHER_BYTES = 32 * 2**20
