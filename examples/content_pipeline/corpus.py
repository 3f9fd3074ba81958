"""The bundled corpus: research documents of mixed quality, and trusted reference facts.

Research reads the *documents* (a handbook, a blog, a forum thread...), some of
which contain mistakes; the fact-checker compares every extracted claim with
the *reference* facts, which are taken as ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Document:
    """One research document about a topic."""

    id: str
    title: str
    source: str
    text: str


@dataclass(frozen=True, slots=True)
class Topic:
    """A topic: its names, the documents about it and the trusted reference facts."""

    key: str
    title: str
    aliases: tuple[str, ...]
    keywords: frozenset[str]
    documents: tuple[Document, ...]
    reference: tuple[str, ...]


TOPICS: dict[str, Topic] = {
    "honeybees": Topic(
        key="honeybees",
        title="Honeybees",
        aliases=("honeybee", "honey bees", "honey bee", "bees"),
        keywords=frozenset({"honeybee", "honeybees", "bee", "bees", "colony", "queen", "honey"}),
        documents=(
            Document(
                id="bee-handbook",
                title="Honeybee basics",
                source="The Pollinator Handbook",
                text=(
                    "A honeybee colony can contain up to 60,000 worker bees in summer. "
                    "Worker bees communicate the location of flowers with the waggle dance. "
                    "A single colony has one queen, who can lay up to 2,000 eggs a day. "
                    "Honeybees pollinate about one third of the crops humans eat."
                ),
            ),
            Document(
                id="buzz-blog",
                title="Ten things I learned keeping bees",
                source="Backyard Buzz (blog)",
                text=(
                    "Honeybees are fascinating creatures. "
                    "A worker bee visits 5 million flowers to make one pound of honey. "
                    "Honey never spoils when it is sealed and stored properly. "
                    "Honeybees can fly at speeds of up to 60 kilometres per hour."
                ),
            ),
            Document(
                id="garden-forum",
                title="Re: do bees sleep?",
                source="GreenThumbs forum",
                text=(
                    "Honeybees sleep for about 5 to 8 hours a day. "
                    "Every honeybee dies after it stings a person. "
                    "I think bees are the best garden visitors."
                ),
            ),
        ),
        reference=(
            "A honeybee colony can hold up to 60,000 worker bees in summer.",
            "Worker bees use the waggle dance to tell nestmates where flowers are.",
            "A colony has a single queen, who can lay up to 2,000 eggs a day.",
            "Honeybees pollinate roughly one third of the crops humans eat.",
            "Bees visit about 2 million flowers to make one pound of honey.",
            "Sealed honey stored properly never spoils.",
            "Honeybees fly at about 25 kilometres per hour.",
            "A worker honeybee usually dies after stinging a mammal, "
            "because its barbed stinger stays in the skin.",
        ),
    ),
    "coffee": Topic(
        key="coffee",
        title="Coffee",
        aliases=("coffee beans", "espresso"),
        keywords=frozenset({"coffee", "caffeine", "espresso", "arabica", "robusta", "bean"}),
        documents=(
            Document(
                id="coffee-atlas",
                title="Where coffee comes from",
                source="World Coffee Atlas",
                text=(
                    "Coffee is grown in more than 70 countries. "
                    "Brazil is the largest coffee producer in the world. "
                    "The two main species of coffee are Arabica and Robusta. "
                    "Robusta beans contain about twice as much caffeine as Arabica beans."
                ),
            ),
            Document(
                id="morning-cup",
                title="Espresso myths",
                source="Morning Cup (blog)",
                text=(
                    "We love a fresh espresso in the morning. "
                    "Espresso beans come from a special coffee plant. "
                    "Coffee was first discovered in Brazil in the 9th century. "
                    "Light roasts keep slightly more caffeine than dark roasts."
                ),
            ),
            Document(
                id="nutrition-notes",
                title="Caffeine facts",
                source="Nutrition Notes",
                text=(
                    "An 8-ounce cup of brewed coffee contains about 95 milligrams of caffeine. "
                    "Caffeine is almost fully absorbed within 45 minutes."
                ),
            ),
        ),
        reference=(
            "Coffee is grown in more than 70 countries, mostly along the equator.",
            "Brazil is the world's largest coffee producer.",
            "Arabica and Robusta are the two main species of coffee.",
            "Robusta beans contain roughly twice the caffeine of Arabica beans.",
            "Espresso is a brewing method, not a type of bean.",
            "Coffee was first discovered in Ethiopia, according to legend in the 9th century.",
            "An 8-ounce cup of brewed coffee contains about 95 milligrams of caffeine.",
            "Caffeine is almost completely absorbed within 45 minutes of drinking it.",
        ),
    ),
}
"""Every topic the pipeline knows, by key."""


__all__ = ["TOPICS", "Document", "Topic"]
