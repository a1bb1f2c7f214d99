"""The serving group: the serving release the API answers from, its flips and its rollback."""
