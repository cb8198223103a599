"""Write open_orca_demo.parquet: a small OpenOrca-format set written for this project.

Same columns as 1M-GPT4-Augmented.parquet (id, system_prompt, question, response) and the same
four origins (cot, flan, niv, t0), so processorca.py and main.py run offline on a fresh machine.
Most rows are ordinary samples; a few exist only to be dropped by processorca.py's filters
(non-ASCII text, a bad niv/t0 system prompt, a 1-2 token answer, an over-long input or output).
The text is original: arithmetic word problems are generated from templates with worked answers,
the other tasks are short hand-written passages, definitions and answers.

    python assets/openorca_demo/make_demo.py   # rewrites the parquet next to this file
"""
from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

OUT = Path(__file__).resolve().parent / "open_orca_demo.parquet"
SEED = 2024

# ---------------------------------------------------------------- cot: word problems, worked answers
COT_SYSTEM = [
    "You are a careful tutor. Work through the problem one step at a time and state the final answer clearly.",
    "Think it through step by step before you answer.",
    "You are a patient math helper. Show each calculation you make, then give the result.",
    "",  # cot keeps rows without a system prompt
    # A prompt on the niv/t0 list: cot rows with it are kept.
    "You are an AI assistant that follows instruction extremely well. Help as much as you can.",
]


def cot_problem(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(7)
    if kind == 0:
        boxes, per_box, eaten = rng.randint(3, 9), rng.randint(6, 24), rng.randint(2, 15)
        total = boxes * per_box
        return (f"Maya buys {boxes} boxes of crayons with {per_box} crayons in each box. Her little brother "
                f"breaks {eaten} of them. How many unbroken crayons does Maya have?",
                f"Step 1: Find the total number of crayons. {boxes} boxes x {per_box} crayons = {total} crayons.\n"
                f"Step 2: Take away the broken ones. {total} - {eaten} = {total - eaten}.\n"
                f"Maya has {total - eaten} unbroken crayons.")
    if kind == 1:
        speed, hours, extra = rng.randint(40, 90), rng.randint(2, 6), rng.randint(10, 60)
        d = speed * hours
        return (f"A train travels at {speed} km per hour for {hours} hours and then another {extra} km to reach "
                f"the station. How far does it travel in total?",
                f"First, distance at constant speed = speed x time = {speed} x {hours} = {d} km.\n"
                f"Then add the last part of the trip: {d} + {extra} = {d + extra} km.\n"
                f"The train travels {d + extra} km in total.")
    if kind == 2:
        price, qty, paid = rng.randint(2, 9), rng.randint(2, 7), 50
        cost = price * qty
        return (f"Pens cost ${price} each. Leo buys {qty} pens and pays with a ${paid} bill. How much change "
                f"does he get?",
                f"The pens cost {qty} x ${price} = ${cost}.\n"
                f"Change = amount paid - cost = ${paid} - ${cost} = ${paid - cost}.\n"
                f"Leo gets ${paid - cost} in change.")
    if kind == 3:
        students, groups = rng.choice([(24, 4), (30, 5), (36, 6), (28, 7), (45, 9), (32, 8)])
        return (f"A teacher splits {students} students into {groups} equal groups for a science project. "
                f"Each group needs 2 magnifying glasses. How many students are in each group, and how many "
                f"magnifying glasses are needed?",
                f"Students per group: {students} / {groups} = {students // groups}.\n"
                f"Magnifying glasses: {groups} groups x 2 = {groups * 2}.\n"
                f"So there are {students // groups} students in each group and {groups * 2} magnifying "
                f"glasses are needed.")
    if kind == 4:
        start, pct = rng.choice([80, 120, 200, 60, 150]), rng.choice([10, 20, 25, 50])
        off = start * pct // 100
        return (f"A jacket costs ${start}. The shop takes {pct}% off in a sale. What is the sale price?",
                f"The discount is {pct}% of ${start}: {pct}/100 x {start} = ${off}.\n"
                f"Sale price = {start} - {off} = ${start - off}.\n"
                f"The jacket costs ${start - off} in the sale.")
    if kind == 5:
        a, b = rng.randint(3, 12), rng.randint(3, 12)
        return (f"A rectangular garden is {a} meters long and {b} meters wide. A fence goes around it. "
                f"How many meters of fence are needed, and what is the garden's area?",
                f"The perimeter of a rectangle is 2 x (length + width) = 2 x ({a} + {b}) = {2 * (a + b)} m.\n"
                f"The area is length x width = {a} x {b} = {a * b} square meters.\n"
                f"So {2 * (a + b)} meters of fence are needed and the area is {a * b} square meters.")
    age, diff, years = rng.randint(6, 15), rng.randint(20, 35), rng.randint(2, 10)
    return (f"Sam is {age} years old. His mother is {diff} years older than he is. How old will his mother "
            f"be in {years} years?",
            f"Mother's age now: {age} + {diff} = {age + diff}.\n"
            f"In {years} years: {age + diff} + {years} = {age + diff + years}.\n"
            f"Sam's mother will be {age + diff + years} years old.")


# ---------------------------------------------------------------- flan: summaries and reading QA
FLAN_SYSTEM = [
    "You are a helpful assistant. Answer briefly and accurately.",
    "You are an assistant that writes clear, plain summaries.",
    "",  # flan keeps rows without a system prompt
    "Explain how you used the definition to come up with the answer.",  # on the list, but kept for flan
]
PASSAGES = [
    ("The town library extended its opening hours after a survey showed that most visitors came in the "
     "evening. It now closes at nine instead of six on weekdays. Staff say the change costs little because "
     "volunteers run the quiet evening desk.",
     "The library now stays open until nine on weekdays because most visitors come in the evening; volunteers "
     "keep the extra cost low.",
     "Why did the library change its hours?", "Because a survey showed that most visitors came in the evening."),
    ("Honeybees communicate the location of flowers with a waggle dance. The angle of the dance shows the "
     "direction relative to the sun, and the length of the waggle shows the distance. Other bees follow the "
     "dancer and then fly out to find the food.",
     "Honeybees use a waggle dance whose angle gives the direction and whose length gives the distance to food.",
     "What does the length of the waggle tell other bees?", "It tells them how far away the flowers are."),
    ("A small bakery switched from plastic bags to paper ones last spring. Customers complained at first that "
     "the paper tore in the rain, so the owner added a thin wax coating. Complaints stopped within a month.",
     "A bakery replaced plastic bags with paper ones and fixed the rain problem with a wax coating.",
     "What problem did customers have with the paper bags?", "The paper bags tore when it rained."),
    ("The city council voted to turn an empty parking lot into a park with a playground and a community "
     "garden. Work starts in May and should take about four months. Residents can sign up for garden plots "
     "at the town hall.",
     "An empty parking lot will become a park with a playground and garden; work begins in May.",
     "Where can residents sign up for a garden plot?", "They can sign up at the town hall."),
    ("Octopuses have three hearts. Two pump blood through the gills, and the third pumps it to the rest of "
     "the body. When an octopus swims, the third heart stops beating, which is one reason they prefer to "
     "crawl.",
     "Octopuses have three hearts, and because one stops while they swim, they usually crawl instead.",
     "What do two of the octopus's hearts do?", "They pump blood through the gills."),
    ("The school robotics team won the regional contest with a robot that sorts recycling by color and "
     "weight. The team of six students built it from old printer parts. They will compete nationally in June.",
     "A student robotics team won the regional contest with a recycling-sorting robot built from printer parts.",
     "What did the students use to build the robot?", "They built it from old printer parts."),
    ("Tomatoes grow best with at least six hours of sun a day and steady watering. Uneven watering can cause "
     "the fruit to crack. Many gardeners add mulch around the plants to keep the soil moist.",
     "Tomatoes need six hours of sun and steady watering; mulch helps keep the soil moist and stops cracking.",
     "What can uneven watering do to tomatoes?", "It can make the fruit crack."),
    ("A bridge on the river road will close for repairs for two weeks. Drivers are asked to use the north "
     "crossing, which adds about ten minutes to the trip. Buses will keep running on a changed route.",
     "The river road bridge closes for two weeks of repairs; drivers should use the north crossing.",
     "How much longer will the trip take using the north crossing?", "About ten minutes longer."),
    ("The museum’s new exhibit shows tools used by farmers a hundred years ago — plows, scythes and butter "
     "churns. Children can try grinding corn by hand. The exhibit runs until the end of the year.",
     "A museum exhibit shows old farm tools — plows, scythes and churns — and lets children grind corn.",
     "Until when does the exhibit run?", "Until the end of the year."),
    ("Sleep helps the brain store what was learned during the day. In one study, students who slept after "
     "studying remembered more words the next morning than students who stayed awake for the same time.",
     "Sleep helps the brain store new memories, as shown by students who remembered more after sleeping.",
     "Which students remembered more words?", "The students who slept after studying remembered more words."),
    ("Volunteers cleaned three kilometers of beach on Saturday and collected forty bags of litter. Most of "
     "it was plastic bottles and fishing line. The group plans to return every month during the summer.",
     "Volunteers collected forty bags of litter from the beach and will return monthly during summer.",
     "What kind of litter was most common?", "Plastic bottles and fishing line."),
    ("The weather service expects the heat wave to end on Thursday, when a cold front brings rain and "
     "temperatures about ten degrees lower. Until then, people are advised to drink water and avoid the "
     "midday sun.",
     "The heat wave should end Thursday with rain and cooler air; until then, stay hydrated and out of the "
     "midday sun.",
     "What will end the heat wave?", "A cold front bringing rain on Thursday."),
]
FLAN_MISC = [
    ("Write a sentence that uses all of these words: river, lantern, quiet.",
     "On the quiet evening, she carried a lantern down to the river."),
    ("Is the following statement true or false? Explain. Water boils at a lower temperature on a high "
     "mountain than at sea level.",
     "True. The air pressure is lower on a high mountain, so water boils at a lower temperature there."),
    ("Give a title for this text: The council approved a new bike lane along Main Street after years of "
     "requests from cyclists.",
     "Council Approves Long-Awaited Main Street Bike Lane"),
    ("What is the opposite of the word \"generous\"? Use it in a sentence.",
     "The opposite is \"stingy\". For example: The stingy landlord refused to fix the heater."),
]

# ---------------------------------------------------------------- niv: task definitions with inputs
NIV_SYSTEM = [
    "Given a definition of a task and an input, produce the output that the definition asks for.",
    "You are a helpful assistant. Read the task definition carefully, then answer and give a short reason.",
    "Read the instructions and the input, and reply with the requested output only.",
]
NIV_TASKS = [
    ("In this task, you are given a short product review. Classify it as \"Positive\" or \"Negative\" "
     "according to the reviewer's opinion, then give the reason in one sentence.",
     [("The blender is loud, but it crushes ice in seconds and is easy to clean.",
       "Positive. The reviewer likes how well it works despite the noise."),
      ("The charger stopped working after two days and support never replied.",
       "Negative. The product failed quickly and support did not help."),
      ("These shoes are comfortable from the first day and the soles hold up well.",
       "Positive. The reviewer praises the comfort and the durable soles."),
      ("The lamp arrived with a cracked base and the switch feels cheap.",
       "Negative. The lamp arrived damaged and feels poorly made.")]),
    ("In this task, you are given a sentence. Write the same sentence in the passive voice.",
     [("The chef cooked the soup.", "The soup was cooked by the chef."),
      ("The children painted the fence.", "The fence was painted by the children."),
      ("A storm damaged the old barn.", "The old barn was damaged by a storm."),
      ("The committee approved the plan.", "The plan was approved by the committee.")]),
    ("In this task, you are given a sentence. List every person's name and every place name in it, "
     "separated by commas.",
     [("Anna met David in Chicago last week.", "Anna, David, Chicago"),
      ("Professor Lee gave a talk in Boston and then flew to Denver.", "Lee, Boston, Denver"),
      ("Maria and Tom drove from Seattle to Portland.", "Maria, Tom, Seattle, Portland"),
      ("The letter from Omar arrived in Nairobi on Monday.", "Omar, Nairobi")]),
    ("Given a fact, write a question that can be answered using the fact. The answer must appear in the fact.",
     [("Plants make their food through photosynthesis.", "How do plants make their food?"),
      ("The heart pumps blood through the body.", "What pumps blood through the body?"),
      ("Magnets attract objects made of iron.", "What kind of objects do magnets attract?"),
      ("Ice melts when it is heated.", "What happens to ice when it is heated?")]),
    ("In this task, you are given two sentences. Answer \"yes\" if the second sentence is a paraphrase of the "
     "first, and \"no\" otherwise, then explain in one sentence.",
     [("Sentence 1: The meeting was moved to Friday. Sentence 2: The meeting now takes place on Friday.",
       "yes. Both sentences say the meeting will happen on Friday."),
      ("Sentence 1: He sold his car. Sentence 2: He bought a new car.",
       "no. Selling a car and buying a car are different actions."),
      ("Sentence 1: The store opens at eight. Sentence 2: The shop starts business at 8 o'clock.",
       "yes. Both sentences give the same opening time for the store."),
      ("Sentence 1: The river flooded the fields. Sentence 2: The fields were dry all spring.",
       "no. A flooded field is not a dry field.")]),
    ("In this task, you are given a word. Write a short definition of the word, as a dictionary would.",
     [("harvest", "The act of gathering a ripe crop from the fields, or the crop gathered."),
      ("fragile", "Easily broken or damaged."),
      ("migrate", "To move from one region to another, often with the seasons."),
      ("echo", "A sound that is reflected off a surface and heard again.")]),
    ("You are given a sentence with a blank marked by ___. Fill in the blank with the most suitable word and "
     "write the whole sentence. Quoted words in the output use “curly” quotes.",
     [("She opened her ___ to keep dry in the rain.", "She opened her umbrella to keep dry in the rain."),
      ("The baker took the fresh ___ out of the oven.", "The baker took the fresh bread out of the oven."),
      ("He said “good ___” before going to bed.", "He said “good night” before going to bed."),
      ("We used a ___ to cut the paper.", "We used a pair of scissors to cut the paper.")]),
]

# ---------------------------------------------------------------- t0: classic prompt templates
T0_SYSTEM = [
    "You are a helpful assistant who answers questions clearly and explains the answer.",
    "You are an assistant. Give the answer first, then a one-sentence justification.",
    "Answer the question using the information given.",
]
T0_ITEMS = [
    ("Premise: A man is riding a bicycle down a hill.\nHypothesis: A person is outdoors.\nDoes the premise "
     "entail the hypothesis? Options: yes, it is not possible to tell, no.",
     "yes. Riding a bicycle down a hill happens outdoors, so the person is outdoors."),
    ("Premise: Two girls are reading in a library.\nHypothesis: The girls are playing soccer.\nDoes the "
     "premise entail the hypothesis? Options: yes, it is not possible to tell, no.",
     "no. The girls are reading in a library, so they are not playing soccer."),
    ("Premise: A woman is holding a cup.\nHypothesis: The woman is drinking coffee.\nDoes the premise entail "
     "the hypothesis? Options: yes, it is not possible to tell, no.",
     "it is not possible to tell. The cup could hold any drink, and she may not be drinking."),
    ("Review: I waited forty minutes for a cold pizza. Never again.\nIs this review positive or negative?",
     "Negative. The reviewer complains about a long wait and cold food."),
    ("Review: Friendly staff, fair prices, and the best pancakes in town.\nIs this review positive or "
     "negative?", "Positive. The reviewer praises the staff, the prices and the food."),
    ("Review: The film started slowly – but the last hour was gripping.\nIs this review positive or negative?",
     "Positive. Despite a slow start, the reviewer found the film gripping."),
    ("Pick the most plausible ending.\nJohn put the kettle on the stove. ...\nA) He waited for the water to "
     "boil.\nB) He planted a tree in the kettle.", "A) He waited for the water to boil."),
    ("Pick the most plausible ending.\nThe power went out during the storm. ...\nA) The family lit some "
     "candles.\nB) The family turned on every light.", "A) The family lit some candles."),
    ("Pick the most plausible ending.\nLisa forgot her umbrella at home. ...\nA) She got wet walking to "
     "work.\nB) She stayed completely dry in the rain.", "A) She got wet walking to work."),
    ("Read the passage and answer the question.\nPassage: The Nile flows north through eleven countries and "
     "empties into the Mediterranean Sea.\nQuestion: Into which sea does the Nile empty?",
     "The Nile empties into the Mediterranean Sea."),
    ("Read the passage and answer the question.\nPassage: Penguins cannot fly, but they are strong swimmers "
     "and use their wings as flippers.\nQuestion: How do penguins use their wings?",
     "They use their wings as flippers for swimming."),
    ("Read the passage and answer the question.\nPassage: The first public library in the town opened in "
     "1902 with a gift of two hundred books.\nQuestion: When did the library open?",
     "The library opened in 1902."),
    ("Paraphrase the sentence: The concert was canceled because of heavy snow.",
     "Heavy snow led to the concert being called off."),
    ("Paraphrase the sentence: She finished the report before the deadline.",
     "She completed the report ahead of the deadline."),
    ("Paraphrase the sentence: The museum is closed on Mondays.",
     "On Mondays, the museum does not open."),
    ("Question: What do you call a baby cat?\nAnswer the question and explain briefly.",
     "A baby cat is called a kitten. The word is used for young cats until about one year old."),
    ("Question: Which planet is closest to the sun?\nAnswer the question and explain briefly.",
     "Mercury is the closest planet to the sun; it orbits nearer than any other planet."),
    ("Question: How many legs does a spider have?\nAnswer the question and explain briefly.",
     "A spider has eight legs, which is one way to tell it apart from insects with six."),
    ("Title: Local farmer wins award\nWrite a short article body for this title.",
     "A local farmer received the county's sustainability award on Friday for cutting water use on her farm by "
     "a third. She credits drip irrigation and careful planning."),
    ("Title: New bus line connects two towns\nWrite a short article body for this title.",
     "A new bus line now links the two towns every hour. Riders say the trip takes half as long as before."),
    ("Generate a question about the following movie plot: A young chef opens a food truck and competes "
     "against a famous restaurant for a city prize.",
     "What prize do the young chef and the famous restaurant compete for?"),
    ("Generate a question about the following movie plot: Two friends sail across the ocean to find a lost "
     "island from an old map.", "What are the two friends trying to find with the old map?"),
    ("Choose the best answer. Where would you keep milk cold?\nOptions: oven, refrigerator, closet",
     "refrigerator. Milk needs to be kept cold, and a refrigerator keeps food cold."),
    ("Choose the best answer. What do people use to tell the time?\nOptions: clock, spoon, pillow",
     "clock. A clock shows the time; spoons and pillows do not."),
    ("Choose the best answer. What do you need to mail a letter?\nOptions: a stamp, a hammer, a shoe",
     "a stamp. Postage stamps pay for mailing a letter."),
    ("Is the following sentence grammatically correct? \"She don't like apples.\"",
     "No. It should be \"She doesn't like apples\" because \"she\" takes \"doesn't\"."),
    ("Is the following sentence grammatically correct? \"They were late for the train.\"",
     "Yes. The subject and verb agree and the sentence is complete."),
]

# ---------------------------------------------------------------- rows the filters must drop
LONG_TEXT = " ".join(
    f"Paragraph {i}: the committee reviewed the budget line by line, noted each change, and asked the "
    f"treasurer to report again at the next meeting with updated figures for repairs and supplies." for i in range(60))
DROPPED = [
    # non-ASCII input (é) and output (ï, an emoji): the English filter drops them
    ("cot", COT_SYSTEM[0], "A café sells 12 croissants an hour for 3 hours. How many croissants does it sell?",
     "12 x 3 = 36. The café sells 36 croissants."),
    ("flan", FLAN_SYSTEM[0], "Describe the plot of a simple detective story in two sentences.",
     "A naïve clerk finds a stolen necklace in a lost-and-found box. She follows the clues to the thief."),
    ("flan", FLAN_SYSTEM[1], "Write a cheerful one-line greeting for a birthday card.",
     "Happy birthday, have a wonderful day! \U0001F382"),
    # bad system prompts for niv and t0 (the empty one included)
    ("niv", "Explain how you used the definition to come up with the answer.",
     "Definition: classify the sentence as a question or a statement.\nInput: Where is the station?",
     "Question. The sentence asks for information and ends with a question mark."),
    ("niv", "You are an AI assistant that follows instruction extremely well. Help as much as you can.",
     "Definition: write the plural of the noun.\nInput: mouse", "The plural of mouse is mice."),
    ("t0", "", "Review: The soup was bland and cold.\nIs this review positive or negative?",
     "Negative. The reviewer found the soup bland and cold."),
    ("t0", "You are an AI assistant. Provide a detailed answer so user don’t need to search outside to "
     "understand the answer.", "Question: What is the capital of France?",
     "The capital of France is Paris, its largest city."),
    # answers of one or two tokens
    ("flan", FLAN_SYSTEM[0], "Is the sky green on a clear day? Answer yes or no.", "No"),
    ("t0", T0_SYSTEM[2], "Which is lighter, a brick (A) or a feather (B)? Answer with the letter only.", "B"),
    # over-long input and over-long output (well over 1024 tokens for any tokenizer)
    ("cot", COT_SYSTEM[1], "Read the minutes and count the paragraphs.\n" + LONG_TEXT,
     "Each paragraph starts with its number, from 0 to 59, so there are 60 paragraphs."),
    ("flan", FLAN_SYSTEM[1], "Repeat the committee minutes in full.", LONG_TEXT),
]


def rows() -> list[tuple[str, str, str, str]]:
    """(origin, system_prompt, question, response) for every row, kept and dropped."""
    rng = random.Random(SEED)
    out = []
    for i in range(28):
        q, a = cot_problem(rng)
        out.append(("cot", COT_SYSTEM[i % len(COT_SYSTEM)], q, a))
    for i, (passage, summary, question, answer) in enumerate(PASSAGES):
        out.append(("flan", FLAN_SYSTEM[i % len(FLAN_SYSTEM)], f"Summarize this text in one sentence:\n{passage}",
                    summary))
        out.append(("flan", FLAN_SYSTEM[(i + 1) % len(FLAN_SYSTEM)], f"{passage}\n\nQuestion: {question}", answer))
    out += [("flan", FLAN_SYSTEM[i % 2], q, a) for i, (q, a) in enumerate(FLAN_MISC)]
    for i, (definition, instances) in enumerate(NIV_TASKS):
        for j, (inp, answer) in enumerate(instances):
            out.append(("niv", NIV_SYSTEM[(i + j) % len(NIV_SYSTEM)], f"Definition: {definition}\n\nInput: {inp}\n\n"
                        "Output:", answer))
    out += [("t0", T0_SYSTEM[i % len(T0_SYSTEM)], q, a) for i, (q, a) in enumerate(T0_ITEMS)]
    return out + DROPPED


def make_frame() -> pd.DataFrame:
    rng = random.Random(SEED)
    all_rows = rows()
    rng.shuffle(all_rows)  # interleave origins as a real dump would be
    used: set[str] = set()
    records = []
    for origin, system, question, response in all_rows:
        while (rid := f"{origin}.{rng.randint(1, 999999)}") in used:
            pass
        used.add(rid)
        records.append({"id": rid, "system_prompt": system, "question": question, "response": response})
    return pd.DataFrame(records, columns=["id", "system_prompt", "question", "response"])


if __name__ == "__main__":
    df = make_frame()
    df.to_parquet(OUT, index=False)
    print(f"wrote {len(df)} rows to {OUT}: {df['id'].str.split('.').str[0].value_counts().to_dict()}")
