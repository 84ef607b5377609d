import { ArrayNotEmpty, IsArray, IsEmail, IsNotEmpty, IsString } from 'class-validator';
import { EmailNotification, SlackNotification } from '../common/contracts';

// What the notifier accepts, checked by `ValidationPipe` before its handlers run: a request that
// is not one of these is answered with a 400 (`RemoteHandlerError`, `remoteCode` 400) at once.

export class SlackRequest implements SlackNotification {
  @IsString()
  @IsNotEmpty()
  request_id!: string;

  @IsString()
  @IsNotEmpty()
  channel!: string;

  @IsString()
  message!: string;
}

export class EmailRequest implements EmailNotification {
  @IsString()
  @IsNotEmpty()
  request_id!: string;

  @IsArray()
  @ArrayNotEmpty()
  @IsEmail({}, { each: true })
  to!: string[];

  @IsString()
  subject!: string;

  @IsString()
  body!: string;

  @IsArray()
  attachments!: EmailNotification['attachments'];
}
