"""The instruction pools of LC-Rec's six task families (Zheng et al., ICDE 2024, arXiv 2311.09049).

Each task has several paraphrased instructions; :class:`genrec.llm.tasks.TaskData` draws one per
example. Placeholders: ``{history}`` a user's items as code strings joined by ", ", ``{titles}`` the
same items as quoted titles, ``{text}`` an item's text, ``{index}`` an item's codes, ``{query}`` a
search query for the target item and ``{preference}`` a preference text of the user
(:mod:`genrec.llm.intentions` writes both offline). The wording is ours; the shape of every pool
(which inputs, which response) follows the LC-Rec code's ``prompt.py``:

* ``seqrec`` (SEQ): code history -> next item's codes.
* ``item2index`` / ``index2item`` (MUT): item text -> codes; codes -> title.
* ``fusionseqrec`` (ASY): code history -> next item's title (templates 0-3) or description
  (4-7); title history -> next item's codes (8-11). :data:`FUSION_RESPONSES` names each one's
  response.
* ``itemsearch`` (ITE): (code history +) preference and/or query -> the item's codes; templates
  6-10 are the query alone ("search engine" prompts).
* ``preferenceobtain`` (PER): code history -> the user's preference text.
"""

from __future__ import annotations

__all__ = ["FUSION_RESPONSES", "TEMPLATES"]

TEMPLATES: dict[str, tuple[str, ...]] = {
    "seqrec": (
        "Here are the items a user interacted with, in order: {history}. Predict the next item the user "
        "will interact with.",
        "A user's interaction history, oldest first: {history}. Which item comes next?",
        "Given the items this user chose in this order: {history}, recommend the item they will choose next.",
        "The user has engaged with {history}, in that order. What will they engage with next?",
        "Based on the sequence {history}, what is the user's next item?",
        "Items consumed so far (chronological): {history}. Recommend one item to follow.",
        "Here is what a user liked, in order: {history}. Name the item they are most likely to like next.",
        "Using the history {history}, forecast the next item for this user.",
    ),
    "item2index": (
        "Which item is described as \"{text}\"? Answer with its item index.",
        "Give the index of this item: {text}",
        "Item description: {text}. What is its index?",
        "Find the item index that corresponds to \"{text}\".",
        "What index identifies the item \"{text}\"?",
        "Map this item to its index: {text}",
    ),
    "index2item": (
        "What is the title of item {index}?",
        "Item {index} is called what?",
        "Tell me the title of the item with index {index}.",
        "Which item does the index {index} stand for? Give its title.",
        "Name the item whose index is {index}.",
        "Decode the item index {index} into its title.",
    ),
    "fusionseqrec": (
        "A user interacted with the items {history}, in this order. What is the title of the item they "
        "will choose next?",
        "From this interaction history: {history}, predict the title of the user's next item.",
        "The user's past items, oldest first, are {history}. Recommend the next one and give its title.",
        "After the items {history}, which item is the user most likely to pick next? Answer with its title.",
        "Look at the user's interactions {history} and describe the kind of item they want next.",
        "Here is a user's item history: {history}. What features should their next item have?",
        "Having interacted with {history}, what will the user's next item be like? Describe it.",
        "The interaction records of a user are {history}. Describe the item that should come next for them.",
        "The titles of the items a user interacted with, in order, are {titles}. Recommend the next item.",
        "A user watched or bought, in this order: {titles}. Which item do they want next?",
        "Given the title history {titles}, what should be recommended to the user next?",
        "Ordered titles of a user's past items: {titles}. Choose the item to recommend next.",
    ),
    "itemsearch": (
        "A user interacted with {history}. Their preferences: \"{preference}\". Recommend an item that fits "
        "these preferences.",
        "The user's history is {history}, and they now say: \"{query}\". Find the item that matches what "
        "they want.",
        "A user who recently interacted with {history} is looking for \"{query}\". Which item meets this "
        "request?",
        "The user searches for \"{query}\". Their history is {history} and their preferences are "
        "\"{preference}\". Answer the search with the best matching item.",
        "Search query: \"{query}\". Past items of the user: {history}. What the user likes: \"{preference}\". "
        "Which item should be returned?",
        "From the history {history} we know the user likes \"{preference}\". They now search for \"{query}\". "
        "Select a suitable item.",
        "You are a search engine and a user types \"{query}\". Which item do you return?",
        "Answer the query \"{query}\" with one item.",
        "As a recommender, recommend one item for this request: \"{query}\".",
        "A user asks: \"{query}\". Respond with the most fitting item.",
        "Here is a search query: \"{query}\". Tell me the item that matches it best.",
    ),
    "preferenceobtain": (
        "A user interacted with {history}, in this order. Describe their preferences.",
        "Given the items {history}, what does this user like?",
        "Summarise the preferences of a user whose history is {history}.",
        "After interacting with {history}, what tastes does the user show?",
        "Here is a user's item history: {history}. Infer their preferences.",
        "From the interaction records {history}, what can you say about the user's preferences?",
        "The items a user chose, oldest first, are {history}. What kind of items do they prefer?",
        "Speculate on the preferences of a user who interacted with {history}.",
        "What are the preferences of someone who interacted with {history} in sequence?",
        "Use the history {history} to summarise what this user likes.",
        "Based on the ordered items {history}, estimate the user's preferences.",
    ),
}
"""Instruction pools; template 0 of ``seqrec`` is the default evaluation prompt."""

FUSION_RESPONSES: tuple[str, ...] = ("title",) * 4 + ("description",) * 4 + ("index",) * 4
"""The response of each ``fusionseqrec`` template: the next item's title, description or codes."""
