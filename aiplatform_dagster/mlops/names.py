"""The registered names of the models the platform trains (an environment's prefix goes in
front, see ``MlflowTarget.model_name``). Plain constants: the code location imports them."""

ROUTER = "query_router"
EMBEDDER = "embedder"
RERANKER = "reranker"
