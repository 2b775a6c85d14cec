def shout(context):
    greeting = context.steps["greet"]["outputs"]["greeting"]
    return {"loud": greeting.upper() + "!", "words": len(greeting.split())}
