"""Knowledge Plugin (DOKE, RecAI): knowledge providers, a gin prompt template, LLM re-ranking of candidates."""

from genrec.knowledge.plugin import KnowledgePlugin, candidate_lists
from genrec.knowledge.prompt import PromptTemplate
from genrec.knowledge.providers import (AttributeKnowledge, CooccurrenceKnowledge, EmbeddingNeighbours,
                                        KnowledgeProvider, RecommenderKnowledge, item_name)
from genrec.knowledge.rerank import LLMReranker

__all__ = ["AttributeKnowledge", "CooccurrenceKnowledge", "EmbeddingNeighbours", "KnowledgePlugin",
           "KnowledgeProvider", "LLMReranker", "PromptTemplate", "RecommenderKnowledge", "candidate_lists",
           "item_name"]
